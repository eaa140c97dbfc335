"""Audio tokenizer on held-out speakers: mel reconstruction L1, codebook usage, perplexity, repeats, CTC CER.

python eval/tokenizer_eval.py ckpt=logs/tokenizer_tiny/checkpoints/last.ckpt [meta=.../meta.lst language=en]

Each ground-truth wav of the meta list (5th field) is tokenized, decoded back to a log-mel (L1 against the
original's log-mel, in nats, over the tokenized frames) and its tokens are read by the CTC head (CER against
the target text as the CTC judge normalizes it). Usage and perplexity come from the code histogram of all
tokens together; repeats are the share of tokens equal to the one before them (within an utterance): how
regular a target the tokens are for the AR model (the main job's tokenizer: about 5 %).
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import torch
from jiwer import cer
from omegaconf import DictConfig
from tqdm import tqdm

from speech.audio.io import load_audio
from speech.checkpoints import build_component, build_model
from speech.data.meta_list import MetaEntry, read_meta_list
from speech.modules.quantizers import usage_and_perplexity
from speech.tensors import pad_sequences
from speech.text.byte_ctc import judge_target

SUMMARY_KEYS = (
    "n_utterances", "n_tokens", "codebook_size", "usage_pct", "perplexity", "repeat_pct", "mel_l1", "cer",
)  # fmt: skip


@torch.no_grad()
def evaluate_tokenizer(
    model, mel, entries: list[MetaEntry], *, language: str, batch_size: int = 8, device="cpu", progress=True
) -> tuple[list[dict], dict]:
    """Scores ``model`` (an ``AudioTokenizer`` in eval mode) on the ``gt_wav`` of each entry.

    Returns:
        ``(records, summary)``: per utterance ``utt``, ``mel_l1``, ``tokens``, ``reference``, ``hypothesis``;
        the summary has frame-weighted ``mel_l1``, ``usage_pct``, ``perplexity``, ``repeat_pct``, corpus
        ``cer`` and counts.
    """
    entries = [e for e in entries if e.gt_wav is not None]
    if not entries:
        raise ValueError("no meta entries with a ground-truth wav (5th field) to tokenize")
    counts = torch.zeros(model.codebook_size)
    records, l1_sum, frames, repeats, pairs = [], 0.0, 0, 0, 0
    for i in tqdm(range(0, len(entries), batch_size), desc="tokenizer eval", disable=not progress):
        chunk = entries[i : i + batch_size]
        wavs = [load_audio(e.gt_wav, sample_rate=mel.sample_rate)[0] for e in chunk]
        audio, audio_lens, _ = pad_sequences(wavs)
        feats, mel_lens = mel(audio.to(device), audio_lens.to(device))
        tokens, token_lens = model.encode(feats, mel_lens)
        voice = (feats, mel_lens) if model.global_condition else (None, None)
        decoded = model.decode(tokens, token_lens, *voice)
        hyps = model.transcribe(tokens, token_lens)
        for j, e in enumerate(chunk):
            n, f = int(token_lens[j]), int(token_lens[j]) * model.downsample
            err = (decoded[j, :f] - feats[j, :f]).abs().sum().item()
            l1_sum, frames = l1_sum + err, frames + f * feats.shape[-1]
            row = tokens[j, :n].cpu()
            counts += torch.bincount(row, minlength=model.codebook_size).float()
            repeats, pairs = repeats + int((row[1:] == row[:-1]).sum()), pairs + max(0, n - 1)
            ref = judge_target(e.target_text, language)
            records.append(
                {"utt": e.utt, "mel_l1": err / max(1, f * feats.shape[-1]), "tokens": n, "reference": ref,
                 "hypothesis": hyps[j]}
            )  # fmt: skip
    usage, ppl = usage_and_perplexity(counts)
    refs, hyps = [r["reference"] for r in records], [r["hypothesis"] for r in records]
    summary = {
        "n_utterances": len(records), "n_tokens": int(counts.sum()), "codebook_size": model.codebook_size,
        "mel_l1": l1_sum / max(1, frames), "usage_pct": 100 * usage.item(), "perplexity": ppl.item(),
        "repeat_pct": 100 * repeats / max(1, pairs), "cer": float(cer(refs, hyps)),
    }  # fmt: skip
    return records, summary


def tokenizer_markdown(summary: dict) -> str:
    cells = [f"{summary[k]:.3f}" if isinstance(summary[k], float) else str(summary[k]) for k in SUMMARY_KEYS]
    rows = [SUMMARY_KEYS, ["---"] * len(SUMMARY_KEYS), cells]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


@hydra.main(config_path="../configs", config_name="entry/tokenizer_eval", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    model, ckpt_cfg = build_model(cfg.ckpt)
    mel = build_component(ckpt_cfg, "data.mel").to(cfg.device)
    model.to(cfg.device)
    records, summary = evaluate_tokenizer(
        model, mel, read_meta_list(cfg.meta), language=cfg.language,
        batch_size=cfg.batch_size, device=cfg.device, progress=cfg.progress,
    )  # fmt: skip
    summary = {"ckpt": str(cfg.ckpt), "meta": str(cfg.meta), **summary}
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "utterances.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(tokenizer_markdown(summary) + "\n")
    print(tokenizer_markdown(summary))
    print(f"written to {out}")
    return summary


if __name__ == "__main__":
    main()
