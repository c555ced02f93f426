"""`/metrics`: the read model's figures as Prometheus text, read at scrape time through a collector on the app's own registry."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, SummaryMetricFamily

from genq.core.reads import Reads


class StoreCollector:
    def __init__(self, reads: Reads, lease_s: float) -> None:
        self.reads, self.lease_s = reads, lease_s

    def collect(self):
        figures = self.reads.figures(self.lease_s)
        jobs = GaugeMetricFamily("genq_jobs", "Jobs in the store by state and kind.", labels=["state", "kind"])
        for (state, kind), count in figures.jobs.items():
            jobs.add_metric([state, kind], count)
        queued = GaugeMetricFamily("genq_queue_length", "Queued jobs per queue.", labels=["queue"])
        for queue, count in figures.queued.items():
            queued.add_metric([queue], count)
        durations = SummaryMetricFamily("genq_job_duration_seconds", "Run time of finished jobs, by kind and state.",
                                        labels=["kind", "state"])
        for runs in figures.run_times:
            durations.add_metric([runs.kind, runs.state], count_value=runs.count, sum_value=round(runs.seconds, 3))
        workers = GaugeMetricFamily("genq_workers", "Worker processes by state (live ones and those of the last day).",
                                    labels=["state"])
        for state, count in figures.workers.items():
            workers.add_metric([state], count)
        return [jobs, queued, durations, workers]


def metrics_registry(reads: Reads, lease_s: float) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(reads, lease_s))
    return registry


def metrics_text(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
