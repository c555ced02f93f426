FROM python:3.11-slim
WORKDIR /opt/genq
COPY pyproject.toml setup.py README.md ./
COPY genq genq
COPY core core
COPY worker worker
COPY client client
COPY migrations migrations
RUN pip install --no-cache-dir .
# A non-root user that owns GENQ_HOME and the folders the compose volumes mount (a fresh named
# volume takes the owner of the folder it is mounted on, so the worker can write to it).
RUN groupadd --system --gid 10001 genq \
 && useradd --system --uid 10001 --gid genq --home-dir /var/lib/genq --shell /usr/sbin/nologin genq \
 && mkdir -p /var/lib/genq/artifacts /var/lib/genq/data \
 && chown -R genq:genq /var/lib/genq \
 && chmod 0700 /var/lib/genq
ENV GENQ_HOME=/var/lib/genq
USER genq
CMD ["genq-worker"]
