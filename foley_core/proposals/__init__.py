"""Measured event proposals: shot cuts, motion onsets, audio onsets and speech, merged into windows."""

from foley_core.proposals.base import Proposal, ProposalSet, ProposalSettings
from foley_core.proposals.propose import propose
from foley_core.proposals.windows import Window, candidate_windows

__all__ = ["Proposal", "ProposalSet", "ProposalSettings", "Window", "candidate_windows", "propose"]
