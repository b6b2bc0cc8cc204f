"""Evaluation tools for reviewers: accuracy on face sets in LFW's format (``devicebio eval``)."""
