"""The reranker's relevance proxy checked against the evaluation's coherence judge.

    .venv/bin/python benchmarks/relevance.py PACK            # e.g. a House pack; ~2 minutes on two cores

The Performer ranks candidates with the cosine of MiniLM embeddings of the message and
the reply (cheap: the index's embedder is loaded anyway); the coherence judge
(``judges.py``) is a classifier fitted on the scripts, too slow to fit per turn and not
to be maximised by the reranker. On the pack's test episodes this prints, for the
character's real replies against the character's replies from other scenes (shuffled)
and against an echo of the message: the AUC of the proxy and of the judge, the rank
correlation of the two, and how often each kind of reply clears ``relevance_floor``
while staying under ``ECHO`` (the gate of ``performer.py``). The baseline, in the same
run, is the judge.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pack")
    parser.add_argument("--pairs", type=int, default=2000)
    args = parser.parse_args()
    from scipy.stats import spearmanr

    from rolecast.chat.performer import ECHO, clears_gate
    from rolecast.evaluation.judges import Judges, last_turn, read_lines, shuffled_pairs
    from rolecast.pack import Pack
    from rolecast.settings import PerformerSettings
    from rolecast.stats import roc_auc

    pack = Pack.open(args.pack)
    judges = Judges.fit(pack)
    contexts, replies, y = shuffled_pairs(read_lines(pack)["test"], pack.character, 14, args.pairs)
    if not len(y):
        sys.exit(f"{args.pack} has too few test lines of {pack.character}")
    messages = [last_turn(c) for c in contexts]
    real = [i for i in range(len(y)) if y[i] == 1]
    echo_msgs = [messages[i] for i in real]
    texts = list(dict.fromkeys(messages + replies))
    vectors, index = judges.encoder.encode(texts), {t: k for k, t in enumerate(texts)}

    def cosine(a: list[str], b: list[str]) -> np.ndarray:
        return np.array([float(vectors[index[x]] @ vectors[index[z]]) for x, z in zip(a, b)])

    proxy, judge = cosine(messages, replies), judges.coherence(contexts, replies)
    echo_proxy = cosine(echo_msgs, echo_msgs)
    echo_judge = judges.coherence([contexts[i] for i in real], echo_msgs)
    floor = PerformerSettings().relevance_floor
    gate = np.array([clears_gate(float(r), floor) for r in proxy])
    print(f"{pack.character}: {len(real)} real replies, {len(y) - len(real)} shuffled, {len(real)} echoes (test episodes)")
    print(f"  real vs shuffled AUC: proxy {roc_auc(y, proxy):.3f}, judge {roc_auc(y, judge):.3f}")
    both = np.r_[np.ones(len(real)), np.zeros(len(real))]
    print(f"  real vs echo AUC: proxy {roc_auc(both, np.r_[proxy[real], echo_proxy]):.3f} "
          f"(gated: {roc_auc(both, np.r_[proxy[real] * gate[real], [0.0] * len(real)]):.3f}), "
          f"judge {roc_auc(both, np.r_[judge[real], echo_judge]):.3f}")
    print(f"  Spearman proxy vs judge over all pairs: {spearmanr(proxy, judge).statistic:.3f}")
    print(f"  clear the gate (floor {floor}, echo {ECHO}): real {gate[y == 1].mean():.1%}, "
          f"shuffled {gate[y == 0].mean():.1%}, echoes 0%")
    judged = judge >= np.median(judge)
    print(f"  of the pairs the judge puts in its top half, {gate[judged].mean():.1%} clear the gate; "
          f"of its bottom half, {gate[~judged].mean():.1%}")


if __name__ == "__main__":
    main()
