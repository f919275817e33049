# The training image the Kubeflow Trainer TrainJob runs on each node: `torchrun --no-python avlops train ...`, with
# the runtime's PET_* variables giving nodes, ranks and the rendezvous. It is the component image (the same locked
# environment: torch 2.11 CUDA build, NCCL from its wheels) plus the settings distributed training wants.
#   docker build -f infra/docker/component.Dockerfile -t REGISTRY/avlops:VERSION .
#   docker build -f infra/docker/train.Dockerfile --build-arg BASE=REGISTRY/avlops:VERSION -t REGISTRY/avlops-train:VERSION .
ARG BASE=ghcr.io/avlops/avlops:0.1.0
FROM ${BASE}

# NCCL: log init problems, and let a hung collective fail instead of blocking forever
ENV NCCL_DEBUG=WARN \
    TORCH_NCCL_ASYNC_ERROR_HANDLING=1 \
    OMP_NUM_THREADS=4
WORKDIR /opt/avlops
ENTRYPOINT ["torchrun"]
CMD ["--no-python", "avlops", "train", "--help"]
