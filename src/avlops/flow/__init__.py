"""The pretraining flow as steps: what each Kubeflow Pipelines component (``components/``) calls.

Every step takes plain paths and a config section (the same schema as ``params.yaml``), calls the stage's library
function, and returns a typed result whose ``metadata`` the component attaches to its output artifacts. Nothing here
imports ``kfp``: the steps run the same under ``kfp.local``, on a Kubeflow cluster, or from a test.
"""
