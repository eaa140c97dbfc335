"""Benchmark of the phoneme front-end (a measurement, not a test): espeak-ng's IPA of the built-in corpus's
sentences through libespeak-ng (``speech.text.espeak``, what ``data.bpe.phonemes=espeak-ng`` uses) against one
``espeak-ng --ipa`` process per clause (what it used before), side by side in one run, on one thread.
docs/data_pipeline.md ("Text: spellings or phonemes") quotes it.

    python scripts/bench/bench_phonemes.py --sentences 300 --languages en de es it

Each sentence is split into clauses as ``speech.text.phonemes.clause_ipa`` splits it; both sides convert the
same clauses, and the script counts the clauses on which they disagree (the library leaves some clause-final
stress marks out that the program writes, and reads a clause that starts with a hyphen, which the program
takes for an option). Times are medians over ``--repeats`` passes, in milliseconds per clause.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

from speech.data.synthetic.config import CorpusConfig
from speech.data.synthetic.text_sources import build_pools
from speech.text.espeak import espeak_ipa
from speech.text.phonemes import VOICES, clauses


def program_ipa(words: str, voice: str) -> str:
    """The IPA of one ``espeak-ng -q --ipa`` process, on one line."""
    cmd = ["espeak-ng", "-q", "-b", "1", "--ipa", "-v", voice, words]
    return " ".join(subprocess.run(cmd, capture_output=True, check=True).stdout.decode().split())


def per_clause_ms(convert, pieces: list[tuple[str, str]], repeats: int) -> tuple[float, list[str]]:
    """Median milliseconds per clause of ``convert(words, voice)`` and its outputs."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = [convert(words, voice) for words, voice in pieces]
        times.append((time.perf_counter() - start) * 1000 / len(pieces))
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=300, help="training sentences per language")
    parser.add_argument("--languages", nargs="+", default=["en", "de", "es", "it"], help="of the tiny corpus")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the clauses (median kept)")
    args = parser.parse_args()

    pools = build_pools(args.languages, CorpusConfig().text, seed=0)
    print("| language | clauses | library ms/clause | program ms/clause | speed-up | clauses that differ |")
    print("|---|---:|---:|---:|---:|---:|")
    for language in args.languages:
        voice = VOICES[language]
        pieces = [(words, voice) for sentence in pools[language].train[: args.sentences]
                   for words, _ in clauses(sentence) if words.strip()]  # fmt: skip
        library_ms, library = per_clause_ms(espeak_ipa, pieces, args.repeats)
        program_ms, program = per_clause_ms(program_ipa, pieces, args.repeats)
        differ = sum(a != b for a, b in zip(library, program, strict=True))
        share = 100 * differ / len(pieces)
        print(f"| {language} | {len(pieces)} | {library_ms:.3f} | {program_ms:.2f} | "
              f"x{program_ms / library_ms:.0f} | {differ} ({share:.1f} %) |")  # fmt: skip


if __name__ == "__main__":
    main()
