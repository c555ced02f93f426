# The one genq image: the worker (default command), `client db upgrade` and `client ui` all run from it
# (docker-compose.yml builds it once as genq:<version>; deploy/k8s uses the same tag).
#
# The base image is pinned to an exact version and Debian release. To pin its digest as well, look it
# up and append it, e.g.  docker buildx imagetools inspect python:3.11.13-slim-bookworm  (the "Digest:"
# line), then  FROM python:3.11.13-slim-bookworm@sha256:<that digest>.
FROM python:3.11.13-slim-bookworm

# 1. The dependencies (torch and CUDA wheels: ~5 GB), in a layer that depends on pyproject.toml alone:
#    a change to the code reuses it and reinstalls nothing.
COPY pyproject.toml /opt/genq/src/
RUN python -c "import tomllib; deps = tomllib.load(open('/opt/genq/src/pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write('\n'.join(deps) + '\n')" \
 && pip install --no-cache-dir -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# 2. genq itself, on top, without touching the dependencies.
COPY README.md /opt/genq/src/
COPY src /opt/genq/src/src
RUN pip install --no-cache-dir --no-deps /opt/genq/src

# A non-root user (uid 10001, the one deploy/k8s runs as) that owns GENQ_HOME and the folders the
# compose volumes mount (a fresh named volume takes the owner of the folder it is mounted on, so the
# worker can write to it).
RUN groupadd --system --gid 10001 genq \
 && useradd --system --uid 10001 --gid genq --home-dir /var/lib/genq --shell /usr/sbin/nologin genq \
 && mkdir -p /var/lib/genq/artifacts /var/lib/genq/data \
 && chown -R genq:genq /var/lib/genq \
 && chmod 0700 /var/lib/genq
# Downloaded SD models go under data/ (a volume in docker-compose.yml: a restart downloads nothing again).
# The NVIDIA runtime mounts the driver's compute libraries (torch's wheel brings its own CUDA).
# PYTHONSAFEPATH: `python -m genq.worker.child` (the supervisor's children) never imports from the
# working directory, only the installed package.
ENV GENQ_HOME=/var/lib/genq \
    HOME=/var/lib/genq \
    HF_HOME=/var/lib/genq/data/huggingface \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    PYTHONSAFEPATH=1
# Not /opt/genq/src: `python -m` would import the source folder there instead of the installed package.
WORKDIR /var/lib/genq
USER genq

# Healthy when this container runs no genq-worker supervisor (`client ui`, `client db upgrade`: they
# have checks of their own in docker-compose.yml), or when the supervisor has at least one live worker
# child (`python -m genq.worker.child`). It reads /proc only: no CUDA, no database, no broker. A child
# that keeps dying (the supervisor restarts it with back-off) shows as unhealthy after the retries.
HEALTHCHECK --interval=30s --timeout=10s --start-period=2m --retries=3 \
    CMD ["python", "-c", "import os, sys\ndef argv(pid):\n    try:\n        with open(f'/proc/{pid}/cmdline', 'rb') as f:\n            return f.read().split(b'\\0')\n    except OSError:\n        return []\nme = str(os.getpid())\nprocs = [argv(p) for p in os.listdir('/proc') if p.isdigit() and p != me]\nsupervisor = any(len(a) > 1 and (a[1].endswith(b'/genq-worker') or a[1:3] == [b'-m', b'genq.worker']) for a in procs)\nchild = any(a[1:3] == [b'-m', b'genq.worker.child'] for a in procs)\nsys.exit(0 if child or not supervisor else 1)"]

# The supervisor: by default one worker process per GPU it sees, one CPU worker where it sees none.
CMD ["genq-worker"]
