"""Tenstorrent's acceptance numbers for a language model, shown beside what ingot measures or predicts: PCC >= 0.99
for a model's output against its reference, and what tt-metal reports for Llama-3.1-8B's teacher-forced top-1/top-5
token accuracy in each of its modes (models/tt_transformers). Imports nothing heavy: the cli prints them."""

from __future__ import annotations

from ingot.artifacts.manifest import TenstorrentAcceptance

TT_MIN_PCC = 0.99
TT_REPORTED = {"accuracy": (0.96, 1.00), "performance": (0.90, 0.97)}  # mode -> (top-1, top-5)
TT_REPORTED_MODEL = "Llama-3.1-8B"


def tenstorrent_acceptance(mode: str) -> TenstorrentAcceptance:
    """The numbers for ``mode`` (a policy's name; top-1/top-5 None for anything else, e.g. one weight format)."""
    top1, top5 = TT_REPORTED.get(mode, (None, None))
    return TenstorrentAcceptance(
        min_pcc=TT_MIN_PCC, reported_model=TT_REPORTED_MODEL, reported_top1=top1, reported_top5=top5
    )
