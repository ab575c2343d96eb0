"""How the whole pipeline reads forum-length posts, out of sample.

    .venv/bin/python bench/longposts.py [--posts 60] [--chars 700]

The corpus is chat lines: all but one are under 600 characters, most under 200, so
`rules eval` says nothing about a long post. This builds long posts from the *test*
split (authors the heads never saw): for each test author, posts of at least `--chars`
characters made of that author's must-allow lines that the pipeline delivers alone, and
the same posts with one of the author's risk lines that the pipeline holds alone put in
at a random place. It prints how many of each are held or blocked, by the rules alone
and by the whole pipeline. Figures only; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chatserver.config import read_rule_files  # noqa: E402
from chatserver.moderation.classifier import load_classifier  # noqa: E402
from chatserver.moderation.corpus import load_corpus  # noqa: E402
from chatserver.moderation.engine import load_rules  # noqa: E402
from chatserver.moderation.pipeline import Moderator  # noqa: E402
from chatserver.moderation.rules import Action  # noqa: E402
from chatserver.settings import ModelConfig  # noqa: E402

SAFE = ("support", "everyday")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--posts", type=int, default=60, help="posts per test author")
    ap.add_argument("--chars", type=int, default=700, help="least length of a post")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rules = load_rules(read_rule_files(str(ROOT / "chatserver/moderation_rules")))
    moderator = Moderator(rules, load_classifier(), ModelConfig())

    def held(text: str) -> bool:
        return moderator.check(text).action >= Action.HOLD

    lines: dict[tuple[str, bool], list[tuple[str, str]]] = collections.defaultdict(list)
    for row in load_corpus(ROOT / "corpus", ROOT / "tests/moderation/corpus").test:
        lines[(row.author, row.label in SAFE)].append((row.text, row.label))
    rnd = random.Random(args.seed)
    safe_posts: list[str] = []
    risk_posts: list[str] = []
    for author in sorted({a for a, _ in lines}):
        safe = [text for text, _ in lines[(author, True)] if not held(text)]
        risky = [text for text, label in lines[(author, False)]
                 if label == "risk" and held(text)]
        for _ in range(args.posts):
            parts: list[str] = []
            while sum(len(p) + 1 for p in parts) < args.chars:
                parts.append(rnd.choice(safe))
            safe_posts.append(" ".join(parts))
            at = rnd.randrange(len(parts) + 1)
            risk_posts.append(" ".join([*parts[:at], rnd.choice(risky), *parts[at:]]))

    def share(posts: list[str], check: Callable[[str], bool]) -> str:
        n = sum(1 for p in posts if check(p))
        return f"{n}/{len(posts)} ({n / len(posts):.1%})"

    def by_rules(text: str) -> bool:
        return rules.check(text, "participant").action >= Action.HOLD

    print(f"test authors' posts of {args.chars}+ characters, held or blocked:")
    print(f"  must-allow lines only:          rules {share(safe_posts, by_rules)}, "
          f"whole {share(safe_posts, held)}")
    print(f"  the same with one risk line in: rules {share(risk_posts, by_rules)}, "
          f"whole {share(risk_posts, held)}")


if __name__ == "__main__":
    main()
