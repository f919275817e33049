"""The pretraining flow as steps: what each Kubeflow Pipelines component (``components/``) calls.

Every step takes plain paths and a config section (the same schema as ``params.yaml``), calls the stage's library
function, and returns a typed result whose ``metadata`` the component attaches to its output artifacts. Nothing here
imports ``kfp``: the steps run the same under ``kfp.local``, on a Kubeflow cluster, or from a test.
"""

from avlops.flow.runtime import end_after_outputs

# Every component body imports from this package first, before its step's heavy libraries: inside a KFP task this
# arms the quick exit once the task's outputs are written (see avlops.flow.runtime); elsewhere it does nothing.
end_after_outputs()
