FROM python:3.11-slim
WORKDIR /opt/genq
COPY pyproject.toml setup.py README.md ./
COPY genq genq
COPY core core
COPY worker worker
COPY client client
COPY migrations migrations
RUN pip install --no-cache-dir .
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
ENV GENQ_HOME=/var/lib/genq \
    HOME=/var/lib/genq \
    HF_HOME=/var/lib/genq/data/huggingface \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER genq
# The supervisor: by default one worker process per GPU it sees, one CPU worker where it sees none.
CMD ["genq-worker"]
