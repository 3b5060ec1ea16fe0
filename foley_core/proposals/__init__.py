"""Measured event proposals: shot cuts, motion onsets, audio onsets and speech, merged into windows."""

from v2t_foley.foley_core.proposals.base import Proposal, ProposalSet, ProposalSettings
from v2t_foley.foley_core.proposals.propose import propose
from v2t_foley.foley_core.proposals.windows import Window, candidate_windows

__all__ = ["Proposal", "ProposalSet", "ProposalSettings", "Window", "candidate_windows", "propose"]
