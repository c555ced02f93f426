FROM python:3.11-slim
WORKDIR /opt/genq
COPY pyproject.toml setup.py README.md ./
COPY genq genq
COPY core core
COPY worker worker
COPY client client
COPY migrations migrations
RUN pip install --no-cache-dir .
ENV GENQ_HOME=/var/lib/genq
CMD ["genq-worker"]
