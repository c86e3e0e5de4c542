"""vilasr_ros_training: the three-stage ViLaSR recipe (cold-start SFT, reflective rejection
sampling, GRPO) on Hugging Face trl, driven by the runtime's protocol, drawing and loop.

Installed as ``vilasr_ros_training`` (setuptools ``package_dir``). Heavy dependencies (trl, peft,
datasets) are the ``[train]`` extra and are imported where used.
"""
