"""DEMO sentences, not a benchmark: a few dozen short movie-review lines written for promptkit.

``make demo`` (``benchmarks/zero_shot.py --task sst2 --best``) scores these when no SST-2
data can be had anywhere (no ``$PROMPTKIT_DATA``, no ``shared/data``, nothing in the cache and
no Hugging Face hub), so a first run shows the model's predictions instead of an error. They
were written by promptkit's authors for this purpose, in the style of SST-2 (0 negative, 1
positive); they are not drawn from SST-2 or any other data set, and an accuracy on them says
nothing about SST-2. Get SST-2 (see :mod:`promptkit.data`) for the real figure.

Example:
    >>> rows = demo_rows()
    >>> len(rows), sorted({r["label"] for r in rows})
    (32, [0, 1])
"""

from __future__ import annotations

DEMO_NOTE = "DEMO sentences written for promptkit, not a benchmark: an accuracy on them says nothing about SST-2."

# (text, label): 1 positive, 0 negative. Sixteen of each, some plain, some with a twist.
DEMO_SENTENCES: tuple[tuple[str, int], ...] = (
    ("A warm, funny film that earns every one of its tears.", 1),
    ("The two leads have a chemistry you cannot fake, and the script knows it.", 1),
    ("Gorgeous to look at and even better to listen to.", 1),
    ("I walked out grinning and wanted to see it again the next day.", 1),
    ("A smart thriller that trusts its audience to keep up.", 1),
    ("The best animated feature of the year, and not by a small margin.", 1),
    ("Every small part is cast perfectly, down to the waiter in the last scene.", 1),
    ("It starts slowly, but the final hour is as gripping as anything this season.", 1),
    ("A tender, honest portrait of a family that never asks for pity.", 1),
    ("The jokes land, the songs are catchy, and the ending is earned.", 1),
    ("Quietly devastating and beautifully acted.", 1),
    ("A rare sequel that is better than the original.", 1),
    ("Sharp dialogue, real stakes, and a villain you almost root for.", 1),
    ("Not a perfect film, but a generous and moving one.", 1),
    ("The director makes a small story feel enormous.", 1),
    ("An absolute delight from the first frame to the last.", 1),
    ("A dull, tedious mess that goes nowhere for two hours.", 0),
    ("The plot holes are big enough to drive a truck through.", 0),
    ("I checked my watch four times before the first act was over.", 0),
    ("Wooden acting and a script that seems to have been written in an afternoon.", 0),
    ("Loud, long and completely forgettable.", 0),
    ("The trailer was better than the movie.", 0),
    ("A talented cast wasted on jokes that never land.", 0),
    ("It wants to be profound but only manages to be pretentious.", 0),
    ("The ending makes no sense, and the rest is not much better.", 0),
    ("Even the special effects look cheap and rushed.", 0),
    ("A lifeless remake that misses everything that made the original work.", 0),
    ("Despite a promising start, it collapses into a pile of clichés.", 0),
    ("The characters are so thin that I stopped caring who survived.", 0),
    ("Two hours of my life I will never get back.", 0),
    ("Clumsy, preachy and painfully unfunny.", 0),
    ("Beautiful scenery cannot save a story this boring.", 0),
)


def demo_rows(limit: int | None = None) -> list[dict[str, object]]:
    """The demo sentences as SST-2-style rows ``{"text", "label"}``, positives and negatives interleaved.

    Args:
        limit: keep only the first ``limit`` rows (still both labels from 2 rows on).
    """
    positives = [s for s in DEMO_SENTENCES if s[1] == 1]
    negatives = [s for s in DEMO_SENTENCES if s[1] == 0]
    rows = [{"text": t, "label": y} for pair in zip(positives, negatives) for t, y in pair]
    return rows if limit is None else rows[:limit]
