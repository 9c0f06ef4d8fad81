# The pneumo demo as a container a hospital can run on its own server (CPU only, no GPU needed):
#
#   docker build -t pneumo .
#   docker run -p 7860:7860 pneumo                        # the bundled models
#   docker run -p 7860:7860 -e PNEUMO_CNN_LSTM_MODEL=OWNER/pneumo-cnn-lstm \
#       -e PNEUMO_RESNET50_MODEL=OWNER/pneumo-resnet50 pneumo   # models from the Hub
#
# tests/test_container.py runs this file's CMD with its ENV, as the container does, and lints it.
FROM python:3.11-slim

# MALLOC_ARENA_MAX: two glibc malloc arenas, not one per thread serving requests: over 400 soak calls
# (benchmarks/soak.py) the demo's resident memory grew 9.2% with the default and stayed flat with two.
# `docker stop` sends SIGTERM to app.py, which closes the demo and deletes the files it served (exit status 0).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False \
    TF_CPP_MIN_LOG_LEVEL=2 \
    HF_HOME=/home/pneumo/.cache/huggingface \
    MALLOC_ARENA_MAX=2

RUN useradd --create-home --uid 10001 pneumo
WORKDIR /app

# The demo's Debian packages (packages.txt: a CJK font, so the PDF report prints Chinese, Japanese and Korean
# names; without it the report says which characters it cannot print).
COPY packages.txt .
# hadolint ignore=DL3008
RUN apt-get update \
    && xargs -a packages.txt apt-get install -y --no-install-recommends \
    && rm -rf /var/lib/apt/lists/*

# Dependencies first: the layer is rebuilt only when requirements.txt changes.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY pneumo/ pneumo/
COPY app.py batch_eval.py ./
COPY examples/ examples/
COPY models/ models/

USER 10001
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['GRADIO_SERVER_PORT'] + '/', timeout=4)"]
CMD ["python", "app.py"]
