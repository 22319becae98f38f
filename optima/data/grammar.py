"""The closed grammar of the synthetic benchmark: every text is one of ``TEMPLATES`` filled with scene words.

All literal words live in ``TEMPLATES`` and the filler constants, so :func:`vocabulary` collects the
word vocabulary from the grammar itself: it is identical for every split, task and seed, and one word
tokenizer (one teacher) serves all four tasks.

Texts are lowercase words separated by single spaces; punctuation ("," ":" "?") is a separate word.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from optima.data.scenes import COL_NAMES, COLOURS, ROW_NAMES, SHAPES, SIZES, Scene, all_cell_names, cell_name

NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight")   # counts in texts are >= 1
PLURALS = {"square": "squares", "circle": "circles", "triangle": "triangles", "diamond": "diamonds", "cross": "crosses"}
BOX_PHRASE = "gray box"
# relation of A to B -> phrasings; "left" means A is left of B
RELATION_PHRASES = {
    "left": ("to the left of", "left of"),
    "right": ("to the right of", "right of"),
    "above": ("above",),
    "below": ("below", "under"),
}
SIDES = ("left", "right")

TEMPLATES: dict[str, tuple[str, ...]] = {
    # captions (5 references per image: one of each kind)
    "cap.item": ("a {obj}",),
    "cap.list": ("{items}", "an image of {items}", "a picture of {items}", "a drawing of {items}"),
    "cap.count": ("{count} {noun} , {items}", "there {be} {count} {noun} : {items}"),
    "cap.placed": ("{item} in the {cell}",),
    "cap.position": ("{placed}", "{placed} on a black background"),
    "cap.relation": ("{a} {rel} {b}", "{a} placed {rel} {b}"),
    "cap.single": ("a single {obj}", "a lone {obj} on a black background", "one {obj} and nothing else"),
    "cap.colours": ("{colours} shapes on a black background", "{count} {noun} colored {colours}"),
    "cap.colour_single": ("a {colour} shape on a black background", "one shape colored {colour}"),
    # VQA questions
    "vqa.colour.shape": ("what color is the {shape} ?",),
    "vqa.colour.cell": ("what color is the shape in the {cell} ?",),
    "vqa.count.all": ("how many shapes are there ?",),
    "vqa.count.colour": ("how many {colour} shapes are there ?",),
    "vqa.count.shape": ("how many {plural} are there ?",),
    "vqa.exist.object": ("is there a {colour} {shape} ?",),
    "vqa.exist.shape": ("are there any {plural} ?",),
    "vqa.where": ("where is the {colour} {shape} ?",),
    "vqa.shape_at": ("what shape is in the {cell} ?",),
    "vqa.relation": ("is the {a} {rel} the {b} ?",),
    # SNLI-VE hypotheses (about the scene, part of which the gray box may hide)
    "ve.exist": ("there is a {colour} {shape}", "the scene contains a {colour} {shape}"),
    "ve.at": ("there is a {colour} {shape} in the {cell}", "the {cell} holds a {colour} {shape}"),
    "ve.none": ("there are no {colour} shapes", "none of the shapes is {colour}"),
    "ve.at_least": ("there {be} at least {count} {noun}",),
    "ve.relation": ("the {a} is {rel} the {b}",),
    # NLVR2 statements about a (left, right) image pair
    "nl.more": ("the {side} image has more shapes than the {other} image",),
    "nl.same": ("both images have the same number of shapes",),
    "nl.both_colour": ("both images contain a {colour} shape",),
    "nl.both_shape": ("both images contain a {shape}",),
    "nl.one_object": ("exactly one image contains a {colour} {shape}",),
    "nl.neither_colour": ("neither image contains a {colour} shape",),
    "nl.total": ("there are {count} shapes in total",),
    "nl.side_only": ("the {side} image contains a {colour} shape and the {other} image does not",),
    "nl.side_count": ("the {side} image contains exactly {count} {noun}",),
    "nl.neither_cell": ("neither image has a shape in the {cell}",),
}

_FILLER_WORDS = (
    *NUMBER_WORDS, *PLURALS.values(), *SHAPES, *COLOURS, *SIZES, BOX_PHRASE, *SIDES,
    *(p for ps in RELATION_PHRASES.values() for p in ps),
    *(n for names in ROW_NAMES.values() for n in names), *(n for names in COL_NAMES.values() for n in names),
    *(name for g in ROW_NAMES for name in all_cell_names(g)),
    "shape", "shapes", "is", "are", ",", "and",
)


def vocabulary() -> list[str]:
    """Every word the grammar can produce, sorted (slots such as ``{obj}`` are not words)."""
    import re

    words: set[str] = set()
    for variants in TEMPLATES.values():
        for template in variants:
            words.update(re.sub(r"\{[a-z_0-9]+\}", " ", template).split())
    for filler in _FILLER_WORDS:
        words.update(filler.split())
    return sorted(words)


def fill(key: str, rng: random.Random, **slots: str) -> str:
    template = rng.choice(TEMPLATES[key])
    return " ".join(template.format(**slots).split())


def join_items(items: list[str]) -> str:
    """'a', 'a and b', 'a , b and c'."""
    if len(items) <= 2:
        return " and ".join(items)
    return " , ".join(items[:-1]) + " and " + items[-1]


def number(n: int) -> str:
    return NUMBER_WORDS[n - 1]


def noun(n: int) -> tuple[str, str]:
    """(be, noun) agreeing with ``n``: ('is', 'shape') or ('are', 'shapes')."""
    return ("is", "shape") if n == 1 else ("are", "shapes")


def relations(a: tuple[int, int], b: tuple[int, int]) -> list[str]:
    """Relations that hold from cell ``a`` to cell ``b`` (row, col)."""
    out = []
    if a[1] < b[1]:
        out.append("left")
    if a[1] > b[1]:
        out.append("right")
    if a[0] < b[0]:
        out.append("above")
    if a[0] > b[0]:
        out.append("below")
    return out


# ----------------------------------------------------------------------------------------- captions
# An "item" is a visible thing with a cell: a shape, or the gray box.
def _items(scene: Scene) -> list[tuple[str, str, tuple[int, int]]]:
    """(sized phrase, plain phrase, cell) in reading order."""
    items = [(o.phrase(True), o.phrase(False), o.cell) for o in scene.objects]
    if scene.box is not None:
        items.append((BOX_PHRASE, BOX_PHRASE, scene.box))
    return sorted(items, key=lambda item: item[2])


def captions(scene: Scene, rng: random.Random) -> list[str]:
    """Five paraphrased references: a full list, a count, positions, a relation, the colours.

    The first one (the full sized list in reading order) is the one an eval loader uses as the fixed caption.
    """
    items = _items(scene)
    n_shapes = len(scene.objects)
    sized = [fill("cap.item", rng, obj=s) for s, _, _ in items]
    plain = [fill("cap.item", rng, obj=p) for _, p, _ in items]

    out = [fill("cap.list", rng, items=join_items(sized))]

    be, nn = noun(n_shapes)
    shuffled = plain[:]
    rng.shuffle(shuffled)
    out.append(fill("cap.count", rng, count=number(n_shapes), noun=nn, be=be, items=join_items(shuffled)))

    chosen = rng.sample(range(len(items)), min(2, len(items)))
    placed = [
        fill("cap.placed", rng, item=(sized if rng.random() < 0.5 else plain)[i], cell=cell_name(*items[i][2], scene.grid_size))
        for i in sorted(chosen)
    ]
    out.append(fill("cap.position", rng, placed=" and ".join(placed)))

    if len(items) >= 2:
        i, j = rng.sample(range(len(items)), 2)
        rel = rng.choice(relations(items[i][2], items[j][2]))
        out.append(fill("cap.relation", rng, a=plain[i], b=plain[j], rel=rng.choice(RELATION_PHRASES[rel])))
    else:
        out.append(fill("cap.single", rng, obj=items[0][0]))

    colours = list(dict.fromkeys(o.colour for o in scene.reading_order()))
    if n_shapes == 1:
        out.append(fill("cap.colour_single", rng, colour=colours[0]))
    else:
        out.append(fill("cap.colours", rng, colours=join_items(colours), count=number(n_shapes), noun="shapes"))
    return out


# ----------------------------------------------------------------------------------------------- VQA
VQA_KINDS = ("colour", "count", "existence", "position")


def _absent(scene: Scene, rng: random.Random) -> tuple[str, str]:
    """A (colour, shape) that no visible object has."""
    present = {(o.colour, o.shape) for o in scene.objects}
    return rng.choice([(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present])


def vqa_question(scene: Scene, kind: str, rng: random.Random) -> dict:
    """One question of ``kind``: {question, answer, answer_type, question_type}."""
    objs = scene.reading_order()
    obj = rng.choice(objs)
    g = scene.grid_size
    if kind == "colour":
        if scene.count(shape=obj.shape) == 1 and rng.random() < 0.5:
            return _q(fill("vqa.colour.shape", rng, shape=obj.shape), obj.colour, "other", "what color is the")
        return _q(fill("vqa.colour.cell", rng, cell=cell_name(*obj.cell, g)), obj.colour, "other", "what color is the")
    if kind == "count":
        variant = rng.randrange(3)
        if variant == 0:
            return _q(fill("vqa.count.all", rng), str(len(objs)), "number", "how many")
        if variant == 1:
            colour = rng.choice(list(COLOURS))
            return _q(fill("vqa.count.colour", rng, colour=colour), str(scene.count(colour=colour)), "number", "how many")
        shape = rng.choice(SHAPES)
        return _q(fill("vqa.count.shape", rng, plural=PLURALS[shape]), str(scene.count(shape=shape)), "number", "how many")
    if kind == "existence":
        yes = rng.random() < 0.5
        if rng.random() < 0.5:
            colour, shape = (obj.colour, obj.shape) if yes else _absent(scene, rng)
            return _q(fill("vqa.exist.object", rng, colour=colour, shape=shape), "yes" if yes else "no", "yes/no", "is there a")
        present = sorted({o.shape for o in objs})
        absent = [s for s in SHAPES if s not in present]
        shape = rng.choice(present) if yes or not absent else rng.choice(absent)
        answer = "yes" if shape in present else "no"
        return _q(fill("vqa.exist.shape", rng, plural=PLURALS[shape]), answer, "yes/no", "are there")
    if kind == "position":
        variant = rng.randrange(3) if len(objs) >= 2 else rng.randrange(2)
        if variant == 0:
            return _q(fill("vqa.where", rng, colour=obj.colour, shape=obj.shape), cell_name(*obj.cell, g), "other", "where is the")
        if variant == 1:
            return _q(fill("vqa.shape_at", rng, cell=cell_name(*obj.cell, g)), obj.shape, "other", "what shape is")
        a, b = rng.sample(objs, 2)
        rel = rng.choice(list(RELATION_PHRASES))
        answer = "yes" if rel in relations(a.cell, b.cell) else "no"
        text = fill("vqa.relation", rng, a=a.phrase(), b=b.phrase(), rel=rng.choice(RELATION_PHRASES[rel]))
        return _q(text, answer, "yes/no", "is the")
    raise ValueError(f"unknown VQA question kind {kind!r}")


def _q(question: str, answer: str, answer_type: str, question_type: str) -> dict:
    return {"question": question, "answer": answer, "answer_type": answer_type, "question_type": question_type}


def confusable_answer(answer: str, grid_size: int, rng: random.Random) -> str:
    """A plausible wrong answer an annotator might give instead of ``answer``."""
    if answer in ("yes", "no"):
        return "no" if answer == "yes" else "yes"
    if answer.isdigit():
        n = int(answer)
        return str(n + 1 if n == 0 or rng.random() < 0.5 else n - 1)
    if answer in COLOURS:
        return rng.choice([c for c in COLOURS if c != answer])
    if answer in SHAPES:
        return rng.choice([s for s in SHAPES if s != answer])
    cells = {cell_name(r, c, grid_size): (r, c) for r in range(grid_size) for c in range(grid_size)}
    if answer in cells:
        r, c = cells[answer]
        neighbours = [cell_name(r + dr, c + dc, grid_size) for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0))
                      if 0 <= r + dr < grid_size and 0 <= c + dc < grid_size]
        return rng.choice(neighbours)
    raise ValueError(f"no confusable answer for {answer!r}")


# ------------------------------------------------------------------------------------------- SNLI-VE
VE_LABELS = ("entailment", "neutral", "contradiction")


def _ve_exist(scene: Scene, label: str, rng: random.Random) -> str | None:
    if label == "entailment":
        obj = rng.choice(scene.objects)
        return fill("ve.exist", rng, colour=obj.colour, shape=obj.shape)
    if (label == "neutral") != (scene.box is not None):
        return None   # an absent object is undecidable exactly when the box could hide it
    colour, shape = _absent(scene, rng)
    return fill("ve.exist", rng, colour=colour, shape=shape)


def _ve_at(scene: Scene, label: str, rng: random.Random) -> str | None:
    g = scene.grid_size
    if label == "entailment":
        obj = rng.choice(scene.objects)
        return fill("ve.at", rng, colour=obj.colour, shape=obj.shape, cell=cell_name(*obj.cell, g))
    if label == "neutral":
        if scene.box is None:
            return None
        colour, shape = _absent(scene, rng)   # a visible object cannot also be under the box
        return fill("ve.at", rng, colour=colour, shape=shape, cell=cell_name(*scene.box, g))
    cells = [(r, c) for r in range(g) for c in range(g) if (r, c) != scene.box]
    cell = rng.choice(cells)
    here = scene.at(cell)
    kinds = [(c, s) for c in COLOURS for s in SHAPES if here is None or (c, s) != (here.colour, here.shape)]
    colour, shape = rng.choice(kinds)
    return fill("ve.at", rng, colour=colour, shape=shape, cell=cell_name(*cell, g))


def _ve_none(scene: Scene, label: str, rng: random.Random) -> str | None:
    present = {o.colour for o in scene.objects}
    if label == "contradiction":
        return fill("ve.none", rng, colour=rng.choice(sorted(present)))
    if (label == "neutral") != (scene.box is not None):
        return None
    colour = rng.choice([c for c in COLOURS if c not in present])
    return fill("ve.none", rng, colour=colour)


def _ve_at_least(scene: Scene, label: str, rng: random.Random, max_count: int = 4) -> str | None:
    visible = len(scene.objects)
    hidden = 1 if scene.box is not None else 0   # the box hides at most one shape
    if label == "entailment":   # "at least one shape" would be entailed by every scene: start at two
        options = list(range(2, visible + 1))
    elif label == "neutral":
        options = [visible + 1] if hidden and visible + 1 <= max_count else []
    else:
        options = list(range(visible + hidden + 1, max_count + 1))
    if not options:
        return None
    k = rng.choice(options)
    be, nn = noun(k)
    return fill("ve.at_least", rng, be=be, count=number(k), noun=nn)


def _ve_relation(scene: Scene, label: str, rng: random.Random) -> str | None:
    if label == "neutral" or len(scene.objects) < 2:
        return None
    a, b = rng.sample(scene.objects, 2)
    true = relations(a.cell, b.cell)
    pool = true if label == "entailment" else [r for r in RELATION_PHRASES if r not in true]
    rel = rng.choice(pool)
    return fill("ve.relation", rng, a=a.phrase(), b=b.phrase(), rel=rng.choice(RELATION_PHRASES[rel]))


VE_TEMPLATES: tuple[Callable[[Scene, str, random.Random], str | None], ...] = (
    _ve_exist, _ve_at, _ve_none, _ve_at_least, _ve_relation,
)


def ve_hypothesis(scene: Scene, label: str, rng: random.Random, max_count: int = 4) -> str | None:
    """A hypothesis with gold ``label`` for ``scene``, or None when the scene admits none
    (neutral needs the box: only what it may hide is undecidable)."""
    order = list(VE_TEMPLATES)
    rng.shuffle(order)
    for template in order:
        text = template(scene, label, rng, max_count) if template is _ve_at_least else template(scene, label, rng)
        if text is not None:
            return text
    return None


# --------------------------------------------------------------------------------------------- NLVR2
Pair = tuple[Scene, Scene]


def nlvr2_statement(rng: random.Random, grid_size: int, max_objects: int) -> tuple[str, Callable[[Pair], bool]]:
    """A random statement and its truth function over a (left, right) scene pair."""
    kind = rng.randrange(10)
    colour = rng.choice(list(COLOURS))
    shape = rng.choice(SHAPES)
    side = rng.randrange(2)
    sides = dict(side=SIDES[side], other=SIDES[1 - side])
    if kind == 0:
        return fill("nl.more", rng, **sides), lambda p: len(p[side].objects) > len(p[1 - side].objects)
    if kind == 1:
        return fill("nl.same", rng), lambda p: len(p[0].objects) == len(p[1].objects)
    if kind == 2:
        return fill("nl.both_colour", rng, colour=colour), lambda p: all(s.has(colour=colour) for s in p)
    if kind == 3:
        return fill("nl.both_shape", rng, shape=shape), lambda p: all(s.has(shape=shape) for s in p)
    if kind == 4:
        text = fill("nl.one_object", rng, colour=colour, shape=shape)
        return text, lambda p: sum(s.has(colour, shape) for s in p) == 1
    if kind == 5:
        return fill("nl.neither_colour", rng, colour=colour), lambda p: not any(s.has(colour=colour) for s in p)
    if kind == 6:
        total = rng.randint(2, 2 * max_objects)
        return fill("nl.total", rng, count=number(total)), lambda p: len(p[0].objects) + len(p[1].objects) == total
    if kind == 7:
        text = fill("nl.side_only", rng, colour=colour, **sides)
        return text, lambda p: p[side].has(colour=colour) and not p[1 - side].has(colour=colour)
    if kind == 8:
        n = rng.randint(1, max_objects)
        be, nn = noun(n)
        text = fill("nl.side_count", rng, count=number(n), noun=nn, **sides)
        return text, lambda p: len(p[side].objects) == n
    cell = (rng.randrange(grid_size), rng.randrange(grid_size))
    text = fill("nl.neither_cell", rng, cell=cell_name(*cell, grid_size))
    return text, lambda p: all(s.at(cell) is None for s in p)


__all__ = [
    "TEMPLATES", "VE_LABELS", "VQA_KINDS", "captions", "confusable_answer", "nlvr2_statement",
    "ve_hypothesis", "vocabulary", "vqa_question",
]
