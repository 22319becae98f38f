"""A small table model rendered as GitHub Markdown and booktabs LaTeX (bold cells, notes, rules).

Written here rather than with ``DataFrame.to_markdown``/``Styler.to_latex`` because those need
optional dependencies (tabulate, jinja2) and neither bolds per cell with ``±`` in math mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "±": r"$\pm$", "Δ": r"$\Delta$", "–": "--", "−": "$-$", "×": r"$\times$", "≥": r"$\geq$",
    # OT1-encoded fonts (LaTeX's default) print "<" and ">" as "¡" and "¿" in text mode
    "<": r"\textless{}", ">": r"\textgreater{}",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def markdown_escape(text: str) -> str:
    return text.replace("|", r"\|")


@dataclass(frozen=True)
class Cell:
    text: str
    bold: bool = False


@dataclass
class Table:
    """``align`` has one of l/r/c per column; ``rules_after`` lists row indices followed by a rule."""

    title: str
    header: list[str]
    rows: list[list[Cell]]
    align: str
    rules_after: tuple[int, ...] = ()
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        widths = {len(self.header), len(self.align), *(len(r) for r in self.rows)}
        if len(widths) != 1:
            raise ValueError(f"table {self.title!r}: header, align and rows differ in width: {sorted(widths)}")


def render_markdown(table: Table) -> str:
    def fmt(cell: Cell) -> str:
        text = markdown_escape(cell.text)
        return f"**{text}**" if cell.bold and text else text

    sep = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = [f"### {table.title}", ""]
    lines.append("| " + " | ".join(markdown_escape(h) for h in table.header) + " |")
    lines.append("|" + "|".join(sep[a] for a in table.align) + "|")
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in table.rows]
    if table.notes:
        lines.append("")
        lines += [f"- {markdown_escape(note)}" for note in table.notes]
    return "\n".join(lines) + "\n"


def render_latex(table: Table) -> str:
    """A booktabs ``tabular`` (needs ``\\usepackage{booktabs}``), ready for ``\\input`` in a table float."""

    def fmt(cell: Cell) -> str:
        text = latex_escape(cell.text)
        return rf"\textbf{{{text}}}" if cell.bold and text else text

    lines = [f"% {table.title}"]
    lines += [f"% {note}" for note in table.notes]
    lines.append(rf"\begin{{tabular}}{{{table.align}}}")
    lines.append(r"\toprule")
    lines.append(" & ".join(latex_escape(h) for h in table.header) + r" \\")
    lines.append(r"\midrule")
    for i, row in enumerate(table.rows):
        lines.append(" & ".join(fmt(c) for c in row) + r" \\")
        if i in table.rules_after and i != len(table.rows) - 1:
            lines.append(r"\midrule")
    lines.append(r"\bottomrule")
    lines.append(r"\end{tabular}")
    return "\n".join(lines) + "\n"
