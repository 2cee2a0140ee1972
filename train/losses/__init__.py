"""Training losses, one per file."""
from .alignment import ALIGN_LOSSES, alignment_loss
from .infonce import InfoNCEConfig, infonce_loss

__all__ = ["ALIGN_LOSSES", "alignment_loss", "InfoNCEConfig", "infonce_loss"]
