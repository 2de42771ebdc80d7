# One image for every llmq service (gateway, workers, model pull); compose.yaml picks the command.
# GPU hosts: the default torch wheel from PyPI carries CUDA. CPU-only image, much smaller:
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t llmq:latest .
FROM python:3.11-slim

ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX_URL=""

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LLMQ_HOME=/data

RUN useradd --create-home --uid 1000 llmq \
    && mkdir -p /data/models \
    && chown -R llmq:llmq /data

# torch first, in its own layer: it is most of the image and changes least.
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$TORCH_SPEC"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY llmq llmq
COPY api api
COPY workers workers
COPY engine engine
COPY loadtests loadtests
RUN pip install .

USER llmq
EXPOSE 8000
CMD ["llmq", "--help"]
