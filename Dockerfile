# One image for the API and the worker. Build: docker build -t zscl-serve .
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY zscl_core ./zscl_core
COPY zscl_bench ./zscl_bench
COPY records ./records
COPY jobqueue ./jobqueue
COPY service ./service
COPY worker ./worker
COPY zscl_cli ./zscl_cli
RUN pip install '.[postgres]'
ENV ZSCL_DATA_DIR=/data ZSCL_HOST=0.0.0.0 ZSCL_PORT=8000
VOLUME ["/data"]
EXPOSE 8000
CMD ["zscl", "serve"]
