"""The arms of a run's comparison, one class a file, and the registry: name → class.

The registry's order is the order arms run in (the pre-trained model and the probe measure
the model before fine-tuning changes it). Adding an arm is a new file here and one line below;
no other arm changes. Importing this package loads no torch (the arms import it when they run).
"""

from __future__ import annotations

from bertui.core.arms.base import Arm, Control, Recorder, RunContext
from bertui.core.arms.finetune import FineTuned
from bertui.core.arms.pretrained import Pretrained
from bertui.core.arms.probe import Probe
from bertui.core.arms.scratch import Scratch
from bertui.core.arms.setfit import SetFit
from bertui.core.arms.tapt import Tapt

ARMS: dict[str, type[Arm]] = {
    arm.name: arm for arm in (Pretrained, Probe, FineTuned, Scratch, Tapt, SetFit)
}

__all__ = ["ARMS", "Arm", "Control", "FineTuned", "Pretrained", "Probe", "Recorder", "RunContext",
           "Scratch", "SetFit", "Tapt"]
