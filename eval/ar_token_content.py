"""How much of the text an AR model's own tokens carry, read by the audio tokenizer's CTC head.

    python eval/ar_token_content.py ar_ckpt=logs/ar_tiny/checkpoints/last.ckpt [meta=...] [limit=64]

For each meta entry the AR model generates zero-shot tokens (the prompt wav's speaker vector and the target
text; ``sampling`` as ``infer.py``'s defaults) and the tokenizer it was trained on (``upstream.tokenizer``
of its config, or ``tokenizer_ckpt``) transcribes them with its CTC head (greedy). CER against the judge's
target (``judge_target``) beside two references: the ground truth's own tokens (what real tokens of this
tokenizer carry: the ceiling) and chance (the same transcripts against the next entry's text). Unlike the
clones' WER this needs no flow matching, decoder or ASR: it reads what the AR model put into its tokens.
Writes ``summary.json`` under ``out_dir`` (``configs/entry/ar_token_content.yaml``).
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import torch
from jiwer import cer
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from speech.audio.io import load_audio
from speech.checkpoints import TEXT_BPE_KEY, build_component, build_model, load_checkpoint
from speech.data.meta_list import read_meta_list
from speech.tensors import pad_sequences
from speech.text.bpe import TextBPE
from speech.text.byte_ctc import judge_target


def wavs(paths: list[Path], sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    audio, lens, _ = pad_sequences([load_audio(p, sample_rate=sample_rate)[0] for p in paths])
    return audio, lens


def cer_and_chance(refs: list[str], hyps: list[str]) -> dict:
    """CER of ``hyps`` against their references and against the next entry's (chance)."""
    return {"cer": float(cer(refs, hyps)), "chance_cer": float(cer(refs[1:] + refs[:1], hyps))}


@torch.no_grad()
def token_content(ar, ar_mel, bpe: TextBPE, tokenizer, tok_mel, entries, language: str, sampling: dict,
                  batch_size: int, seed: int, progress: bool = True) -> dict:  # fmt: skip
    """The summary: ``ground_truth`` and ``generated`` CER (with chance) and the generated tokens' mean
    length against the ground truth's."""
    refs = [judge_target(e.target_text, language) for e in entries]
    truth, generated, truth_lens, gen_lens = [], [], [], []
    generator = torch.Generator().manual_seed(seed)
    for i in tqdm(range(0, len(entries), batch_size), desc="token content", disable=not progress):
        chunk = entries[i : i + batch_size]
        tokens, lens = tokenizer.encode(*tok_mel(*wavs([e.gt_wav for e in chunk], tok_mel.sample_rate)))
        truth += tokenizer.transcribe(tokens, lens)
        truth_lens += lens.tolist()
        speaker = ar.speaker_vector(*ar_mel(*wavs([e.prompt_wav for e in chunk], ar_mel.sample_rate)))
        text, text_lens, _ = pad_sequences([torch.tensor(bpe.encode(e.target_text, language)) for e in chunk])
        tokens, lens = ar.generate(
            speaker=speaker, text=text, text_lens=text_lens, generator=generator, **sampling
        )
        generated += tokenizer.transcribe(tokens, lens)
        gen_lens += lens.tolist()
    return {
        "n": len(entries),
        "ground_truth": {**cer_and_chance(refs, truth), "mean_tokens": sum(truth_lens) / len(truth_lens)},
        "generated": {**cer_and_chance(refs, generated), "mean_tokens": sum(gen_lens) / len(gen_lens)},
        "example": {"reference": refs[0], "ground_truth": truth[0], "generated": generated[0]},
    }


@hydra.main(config_path="../configs", config_name="entry/ar_token_content", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    torch.manual_seed(cfg.seed)
    ar, ar_cfg = build_model(cfg.ar_ckpt)
    if not hasattr(ar, "generate"):
        raise ValueError(f"{cfg.ar_ckpt} holds a {type(ar).__name__}, not an AR model")
    tok_ckpt = cfg.tokenizer_ckpt or OmegaConf.select(ar_cfg, "upstream.tokenizer")
    if not tok_ckpt or not Path(tok_ckpt).is_file():
        raise FileNotFoundError(
            f"the AR model's tokenizer checkpoint {tok_ckpt!r} is not here: give tokenizer_ckpt="
        )
    tokenizer, tok_cfg = build_model(tok_ckpt)
    bpe = TextBPE.from_str(load_checkpoint(cfg.ar_ckpt)[TEXT_BPE_KEY])
    entries = [e for e in read_meta_list(cfg.meta) if e.gt_wav is not None][: cfg.limit]
    if not entries:
        raise ValueError(f"no entry of {cfg.meta} has a ground-truth wav (5th field)")
    ar_mel, tok_mel = build_component(ar_cfg, "data.mel"), build_component(tok_cfg, "data.mel")
    summary = token_content(
        ar, ar_mel, bpe, tokenizer, tok_mel, entries, cfg.language, dict(cfg.sampling), cfg.batch_size,
        cfg.seed, cfg.progress,
    )  # fmt: skip
    summary = {"ar_ckpt": str(cfg.ar_ckpt), "tokenizer_ckpt": str(tok_ckpt), "meta": str(cfg.meta), **summary}
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    for row in ("ground_truth", "generated"):
        s = summary[row]
        print(
            f"{row:13s} CER {s['cer']:.3f}  chance {s['chance_cer']:.3f}  mean tokens {s['mean_tokens']:.1f}"
        )
    print(f"written to {out}")
    return summary


if __name__ == "__main__":
    main()
