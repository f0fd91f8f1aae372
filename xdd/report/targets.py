"""The issue's targets, checked on the long table (:func:`xdd.report.tables.results_table`):
the retrained method (``AFTER``) against what it starts from, under each reference.

Which methods are compared comes from the method table, never from a method's name: under the
labeled reference (the paper's protocol) the pretrained network (``BEFORE``); under the unlabeled
reference the k-NN on the network's input (a method that scores no network) and on the
pretrained network's embedding.
"""
from __future__ import annotations

from collections import Counter

from xdd.core.methods import AFTER, BEFORE, TABLE, short
from xdd.report.tables import after_rows, per_digit_means, span

# How the targets name an unlabeled-reference baseline, by the network it scores.
KNN_OF_NETWORK = {None: "the raw-pixel k-NN", "pretrained": "the pretrained-D k-NN"}
MIN_GANS = 3  # GAN seeds per digit
MIN_WINS, OF_DIGITS = 9, 10  # digits where AFTER is above a baseline
UNLABELED_TARGET, MOONSHOT = 0.75, 0.90  # mean AFTER AUPRC under the unlabeled reference


def unlabeled_baselines() -> list[tuple[str, str]]:
    """(name, how the targets call it) of the methods AFTER is held against under the unlabeled
    reference, in table order: those that score no network (the input itself) and the
    pretrained network (BEFORE).  A method is called by the k-NN on its network when it is the
    only one compared on that network, else by its label."""
    rows = [m for m in TABLE
            if (m.network is None or m.name == BEFORE) and "unlabeled" in m.scored]
    per_network = Counter(m.network for m in rows)
    return [(m.name, KNN_OF_NETWORK[m.network] if per_network[m.network] == 1
             and m.network in KNN_OF_NETWORK else m.label) for m in rows]


def _wins(means, other: str) -> tuple[int, int]:
    """On how many digits AFTER's mean is above ``other``'s, of the digits both cover."""
    both = means.loc[[AFTER, other]].dropna(axis=1)
    return int((both.loc[AFTER] > both.loc[other]).sum()), both.shape[1]


def _gan_target(df) -> list[tuple[bool, str]]:
    gans = after_rows(df).groupby("ood_digit").pretrain_key.nunique()
    if not len(gans):
        return []
    short_of = int((gans < MIN_GANS).sum())
    return [(short_of == 0 and len(gans) >= OF_DIGITS,
             f"GANs: {span(gans)} GAN seeds behind each digit's {short(AFTER)} cells; "
             f"**{short_of} of {len(gans)}** digits have fewer than {MIN_GANS} (target: at least "
             f"{MIN_GANS} GAN seeds per digit).")]


def _win_target(wins: int, n: int, text: str) -> tuple[bool, str]:
    return (wins >= MIN_WINS and n >= OF_DIGITS,
            f"{text} on **{wins} of {n}** digits (target: at least {MIN_WINS} of {OF_DIGITS}).")


def targets(df) -> list[tuple[bool, str]]:
    """The issue's targets checked on the table: (met, sentence) for what the table holds."""
    out = _gan_target(df)
    after = short(AFTER)
    lab = per_digit_means(df, "labeled")
    if AFTER in lab.index and BEFORE in lab.index:
        out.append(_win_target(*_wins(lab, BEFORE), f"Paper protocol (labeled reference): "
                                                    f"{after} above `{BEFORE}`"))
    unl = per_digit_means(df, "unlabeled")
    if AFTER in unl.index:
        for other, name in unlabeled_baselines():
            if other in unl.index:
                out.append(_win_target(*_wins(unl, other),
                                       f"Unlabeled reference: {after} above {name}"))
        mean = float(unl.loc[AFTER].mean())
        out.append((mean >= UNLABELED_TARGET,
                    f"Unlabeled reference: mean {after} AUPRC **{mean:.3f}** "
                    f"(target >= {UNLABELED_TARGET}; moonshot >= {MOONSHOT:.2f})."))
    return out


def targets_markdown(df) -> str:
    return "\n".join(f"- {'met' if met else '**missed**'}: {text}" for met, text in targets(df))
