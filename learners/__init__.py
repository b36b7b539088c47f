"""Learners: SFT, DPO, critic and reward-weighted trainers."""
