"""`/metrics`: Prometheus text read from SQL at scrape time, through a collector on the app's own registry."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, SummaryMetricFamily
from sqlalchemy import func, select

from genq.core.store.jobs import JobStore
from genq.core.store.models import Job
from genq.core.store.states import JobStatus
from genq.core.store.workers import WorkerRegistry


class StoreCollector:
    def __init__(self, store: JobStore, lease_s: float) -> None:
        self.store, self.lease_s = store, lease_s

    def collect(self):
        jobs = GaugeMetricFamily("genq_jobs", "Jobs in the store by state and kind.", labels=["state", "kind"])
        queued = GaugeMetricFamily("genq_queue_length", "Queued jobs per queue.", labels=["queue"])
        durations = SummaryMetricFamily("genq_job_duration_seconds", "Run time of finished jobs, by kind and state.",
                                        labels=["kind", "state"])
        workers = GaugeMetricFamily("genq_workers", "Worker processes by state (live ones and those of the last day).",
                                    labels=["state"])
        with self.store.sessions() as session:
            for state, kind, count in session.execute(select(Job.status, Job.kind, func.count()).group_by(Job.status, Job.kind)):
                jobs.add_metric([state, kind], count)
            for queue, count in session.execute(select(Job.queue, func.count()).where(Job.status == JobStatus.QUEUED.value)
                                                .group_by(Job.queue)):
                queued.add_metric([queue], count)
            seconds = run_seconds(session.get_bind().dialect.name)
            finished = [s.value for s in JobStatus if s.finished]
            for kind, state, count, total in session.execute(
                    select(Job.kind, Job.status, func.count(), func.sum(seconds))
                    .where(Job.status.in_(finished), Job.started_at.is_not(None), Job.finished_at.is_not(None))
                    .group_by(Job.kind, Job.status)):
                durations.add_metric([kind, state], count_value=count, sum_value=round(float(total or 0.0), 3))
        states: dict[str, int] = {}
        for view in WorkerRegistry(self.store.sessions).list(self.lease_s):
            states[view.state.value] = states.get(view.state.value, 0) + 1
        for state, count in sorted(states.items()):
            workers.add_metric([state], count)
        return [jobs, queued, durations, workers]


def run_seconds(dialect: str):
    if dialect == "postgresql":
        return func.extract("epoch", Job.finished_at - Job.started_at)
    return (func.julianday(Job.finished_at) - func.julianday(Job.started_at)) * 86400.0


def metrics_registry(store: JobStore, lease_s: float) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, lease_s))
    return registry


def metrics_text(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
