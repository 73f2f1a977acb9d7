"""The public data sets the analyses read by default: where each comes from (pinned commit and sha256), its
license, what reads it, and where it is found on this machine.

A data set is looked up, in order, in the data cache (`cache_dir()/data/NAME`, filled by
`posttrain-probe data fetch NAME`), then in the shared data folder (`$POSTTRAIN_PROBE_DATA`, else `../shared/data`
beside the repository). Every file is stored exactly as published upstream (the pinned sha256 is the upstream
file's): the loaders read these formats directly, so nothing is normalized.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from posttrain_probe.utils.io import safe_join, safe_name

MIRROR_ENV = "POSTTRAIN_PROBE_DATA_MIRROR"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class DataFile:
    """One file of a data set: its name in the data set's folder, pinned sha256 and size, and the URLs it is
    downloaded from (tried in order; each must give exactly these bytes)."""

    name: str
    sha256: str
    size: int
    urls: tuple[str, ...]

    def __post_init__(self) -> None:
        safe_name(self.name, "data file name")
        if not _SHA256.match(self.sha256):
            raise ValueError(f"{self.name}: sha256 {self.sha256!r} is not 64 lowercase hex digits; pin the full hash")
        if self.size <= 0:
            raise ValueError(f"{self.name}: size {self.size} must be the file's positive byte count")
        if not self.urls or not all(u.startswith(("https://", "http://", "file://")) for u in self.urls):
            raise ValueError(f"{self.name}: urls {self.urls!r} must be one or more http(s):// or file:// URLs")


@dataclass(frozen=True)
class DataSet:
    """A public data set as one folder of files (the layout of `../shared/data/NAME`)."""

    name: str
    title: str
    read_by: str
    license: str
    license_note: str
    source: str
    files: tuple[DataFile, ...]
    notes: str = ""

    def __post_init__(self) -> None:
        safe_name(self.name, "data set name")
        if self.name == "all":
            raise ValueError("'all' is reserved for `data fetch all`; name the data set otherwise")
        if not self.files:
            raise ValueError(f"data set {self.name} lists no files; add at least one DataFile")
        names = [f.name for f in self.files]
        if len(set(names)) != len(names):
            raise ValueError(f"data set {self.name} lists a file twice ({names}); give each file once")

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


class MissingDataError(FileNotFoundError):
    """A data set is neither in the data cache nor in the shared data folder."""


def _gh(repo: str, commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


def _files(repo: str, commit: str, folder: str, pins: dict[str, tuple[str, int]]) -> tuple[DataFile, ...]:
    """DataFiles for `folder/NAME` at `repo@commit`, pinned to `pins[NAME] = (sha256, size)`."""
    return tuple(
        DataFile(name, sha, size, (_gh(repo, commit, f"{folder}/{name}"),)) for name, (sha, size) in pins.items()
    )


_TIU = ("sciai-lab/Truth_is_Universal", "605ef00514415deb4806969a172f6e13e0798df7")
_REFUSAL = ("andyrdt/refusal_direction", "9d852fae1a9121c78b29142de733cb1340770cc3")

_DATA_SETS = (
    DataSet(
        name="known_1000",
        title="ROME known facts (Meng et al. 2022): 1209 subject-relation-object prompts the GPT models know",
        read_by="tracing (knowledge_localization, checkpoint_drift)",
        license="MIT",
        license_note="MIT (ROME, Copyright (c) 2022 Kevin Meng); https://github.com/kmeng01/rome/blob/main/LICENSE",
        source="rome.baulab.info (ROME's REMOTE_URL); pinned copy khnhenriette/ProjectADL@6f1637b",
        files=(
            DataFile(
                "known_1000.json",
                "0a1c2c9cbeb7a60e4a9ba03c8769ff3d12336213d6561307bc83de23f12782ce",
                354112,
                (
                    "https://rome.baulab.info/data/dsets/known_1000.json",
                    _gh("khnhenriette/ProjectADL", "6f1637bbf55cc8506e565513f31e24dda55b9858", "dsets/known_1000.json"),
                ),
            ),
        ),
        notes="The ROME repository downloads this file from rome.baulab.info at run time; the sha256 is that of the "
        "copy committed in a ROME fork (khnhenriette/ProjectADL), which is the fallback URL.",
    ),
    DataSet(
        name="geometry_of_truth",
        title="Geometry of Truth true/false statements (Marks & Tegmark 2023): cities, translations, comparisons",
        read_by="truth (directions, checkpoint_drift); patching reads cities.csv (knowledge_localization)",
        license="MIT as redistributed (upstream unlicensed)",
        license_note="saprmarks/geometry-of-truth has no license file; these byte-identical copies are redistributed "
        "by sciai-lab/Truth_is_Universal under MIT (Copyright (c) 2024 Scientific AI); "
        "https://github.com/sciai-lab/Truth_is_Universal/blob/main/LICENSE",
        source="saprmarks/geometry-of-truth@5d1c630c via sciai-lab/Truth_is_Universal@605ef00",
        files=_files(
            *_TIU,
            "datasets",
            {
                "cities.csv": ("f2560a0c1758c69935b50125111b574b71896bb75930dd87b1d8c973c1fa086e", 95041),
                "neg_cities.csv": ("66c5c84de98ca15570138c205ab0e3907b57750083fac72a4eacafc3d9ebcea7", 101025),
                "sp_en_trans.csv": ("9afa97c1b8af539a05f47655a80a5c7832c6fdb914885fd24cb4bcccbe2795b5", 15231),
                "neg_sp_en_trans.csv": ("bec33e37047135b15cdd18c0cb0c66b65fb435ace08910cbcc220ce1ef610c96", 18063),
                "larger_than.csv": ("406d6872e97910f3af5a031600d4932b5a567b8666e7545c8b446057471ad723", 105858),
                "smaller_than.csv": ("ee6b7cf668d7e0fb3f49a84ca8d510cb7e484ae029ef86ed238362e26ef61a44", 107838),
            },
        ),
        notes="Byte-identical (same git blobs) to saprmarks/geometry-of-truth@5d1c630c datasets/*.csv.",
    ),
    DataSet(
        name="truth_is_universal",
        title="Truth is Universal topic statements (Buerger et al. 2024): animals, elements, facts, inventors",
        read_by="truth (directions, checkpoint_drift)",
        license="MIT",
        license_note="MIT (Copyright (c) 2024 Scientific AI); "
        "https://github.com/sciai-lab/Truth_is_Universal/blob/main/LICENSE",
        source="sciai-lab/Truth_is_Universal@605ef00",
        files=_files(
            *_TIU,
            "datasets",
            {
                "animal_class.csv": ("598ed996dd00dd6cddcf125fafad48ad7c4d827a91dfbd8202473354fdba0d97", 4303),
                "neg_animal_class.csv": ("03676e51600e8357e4e200d08eca7c38952b07a5aef807d5aaefbedc7f257256", 4959),
                "element_symb.csv": ("2aa8da5696a1f0f0c4630b7a75949cf47e81254728be13c0f4e835ed6129a5a6", 5458),
                "neg_element_symb.csv": ("8ee4b64b38fe1e43fb0e794d5acf914f9af4f8a9a99f3df187bfd84f429ffa78", 7318),
                "inventors.csv": ("6990771f01efcbae18bfa3960facbe36c39199f850f407540548a9c04339084c", 14884),
                "neg_inventors.csv": ("f275742ae02a1d2ca11e90d25753b2d3a90f4788f6399e22442cd7774b7db8a7", 17726),
                "facts.csv": ("303ec926c2710a13a6166e204a24ea013bb2991b8761e2899739fddcb923aee1", 32912),
                "neg_facts.csv": ("84c26b283996d4016d3a9b470f09a6b9fe721d9f68444893c060e3ea8419287a", 35164),
            },
        ),
    ),
    DataSet(
        name="refusal_direction",
        title="Harmful/harmless instruction splits of Arditi et al. 2024, plus AdvBench (held-out harmful set)",
        read_by="refusal (directions, checkpoint_drift)",
        license="Apache-2.0; Alpaca parts CC BY-NC 4.0",
        license_note="repository Apache-2.0 (https://github.com/andyrdt/refusal_direction/blob/main/LICENSE); "
        "AdvBench MIT, HarmBench MIT, TDC2023 unverified, MaliciousInstruct no license; harmless_* are Alpaca "
        "instructions under CC BY-NC 4.0 (non-commercial). CONTENT WARNING: harmful requests.",
        source="andyrdt/refusal_direction@9d852fa",
        files=(
            *_files(
                *_REFUSAL,
                "dataset/splits",
                {
                    "harmful_train.json": ("8f5c0eac0efd2a7f99084bbe8d0de2c465e31b1997184783c917969d9de9ece1", 34613),
                    "harmful_val.json": ("305f1d1e6dfa6c50a32d24a18ef815f42b5441eb83e6d7767d242107162fd9f4", 6763),
                    "harmless_train.json": (
                        "86623b1f8a25aa35df153fc97a556dbcebb6a7c881538ae43ee479ca17f2e002",
                        2344466,
                    ),
                    "harmless_val.json": ("772010758e7d771ef4c7e5e4acdfd7598dcece1a6f383f20d382f640913a2a4d", 780532),
                },
            ),
            *_files(
                *_REFUSAL,
                "dataset/raw",
                {"advbench.csv": ("6cd1a5c63c07610d7eb67307772ee5606017ee950b5770ab288a2c487489d3e1", 82125)},
            ),
        ),
        notes="advbench.csv is llm-attacks data/advbench/harmful_behaviors.csv as downloaded by the repository.",
    ),
    DataSet(
        name="tinystories_val_subset",
        title="Leading ~794 KB (~1k stories) of the TinyStories validation split (Eldan & Li 2023)",
        read_by="neurons (entropy_neurons), CKA (checkpoint_drift), tracing reference texts (knowledge_localization)",
        license="CDLA-Sharing-1.0",
        license_note="data CDLA-Sharing-1.0 (TinyStories, https://cdla.dev/sharing-1-0/, share-alike); the exporting "
        "repository yuninxia/moe-routing-bench is MIT",
        source="roneneldan/TinyStories validation (subset committed by yuninxia/moe-routing-bench@bb9bb0b)",
        files=(
            DataFile(
                "tinystories_val.txt",
                "5fc1fb0113df62b567fb271806cd645ce8d75f59c58ca0b764c03d3b6ff34ca6",
                794375,
                (
                    _gh(
                        "yuninxia/moe-routing-bench",
                        "bb9bb0bd461aa77cf6ab89423b758f586a6f75d1",
                        "data/tinystories_val.txt",
                    ),
                ),
            ),
        ),
        notes="This exact subset exists only in that repository (the full split is ~19 MB on the Hugging Face hub); "
        "it contains upstream mojibake in ~234 places.",
    ),
    DataSet(
        name="gsm8k",
        title="GSM8K grade-school math word problems (Cobbe et al. 2021), train and test",
        read_by="rlvr (rlvr_dynamics, checkpoint_drift --task gsm8k)",
        license="MIT",
        license_note="MIT (Copyright (c) 2021 OpenAI); https://github.com/openai/grade-school-math/blob/master/LICENSE",
        source="openai/grade-school-math@3101c7d",
        files=_files(
            "openai/grade-school-math",
            "3101c7d5072418e28b9008a6636bde82a006892c",
            "grade_school_math/data",
            {
                "train.jsonl": ("17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465", 4166206),
                "test.jsonl": ("3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14", 749738),
            },
        ),
    ),
    DataSet(
        name="math500",
        title="MATH-500: the 500-problem test split of PRM800K (Lightman et al. 2023) of MATH (Hendrycks et al.)",
        read_by="rlvr (rlvr_dynamics, checkpoint_drift --task math500)",
        license="MIT",
        license_note="MIT (Copyright (c) 2023 OpenAI, https://github.com/openai/prm800k/blob/main/LICENSE); MATH MIT",
        source="openai/prm800k@7ecc794 prm800k/math_splits/test.jsonl (Git LFS)",
        files=(
            DataFile(
                "test.jsonl",
                "35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132",
                446564,
                (
                    "https://media.githubusercontent.com/media/openai/prm800k/"
                    "7ecc794703b2877f63226f2477a49b34f9b25163/prm800k/math_splits/test.jsonl",
                    _gh(
                        "MobileLLM/BudgetThinker",
                        "f0466b9d37595f46603387baa5930e312fefb7f5",
                        "evaluation/data/math500/test_ori.jsonl",
                    ),
                ),
            ),
        ),
        notes="The sha256 is the Git LFS oid of the upstream file; MobileLLM/BudgetThinker's identical copy is the "
        "fallback URL.",
    ),
    DataSet(
        name="countdown",
        title="256 three-number Countdown problems (test set of d1, Zhao et al. 2025)",
        read_by="rlvr (rlvr_dynamics, checkpoint_drift --task countdown)",
        license="Apache-2.0",
        license_note="Apache-2.0 (dllm-reasoning/d1); https://github.com/dllm-reasoning/d1/blob/main/LICENSE",
        source="dllm-reasoning/d1@837888f",
        files=_files(
            "dllm-reasoning/d1",
            "837888f22c21a5da91a0af2b0d7b19e81d9b47ec",
            "dataset",
            {"countdown_cd3_test.jsonl": ("9916f614621e26fb2b035ed4ea641e35e4fff0d533bb9b9c7bcaaa61017d88c6", 9636)},
        ),
    ),
)

CATALOG: dict[str, DataSet] = {d.name: d for d in _DATA_SETS}


def get_data_set(name: str) -> DataSet:
    """The catalogue entry `name`; one-line error naming the known ones otherwise."""
    try:
        return CATALOG[name]
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; use one of {', '.join(CATALOG)} (or all)") from None


def data_cache_root() -> Path:
    """`cache_dir()/data`: where `data fetch` stores data sets."""
    from posttrain_probe import paths

    return paths.cache_dir() / "data"


def fetch_hint(name: str) -> str:
    return f"run `posttrain-probe data fetch {name}` (or set POSTTRAIN_PROBE_DATA to a folder holding {name}/)"


def find_data_file(relative: str) -> Path | None:
    """`relative` (`NAME/...`) in the data cache when NAME is catalogued, else in the shared data folder; None if
    neither has it. Unsafe relative paths raise."""
    from posttrain_probe import paths

    name = Path(relative).parts[0] if relative else ""
    if name in CATALOG:
        cached = safe_join(data_cache_root(), relative, "data path")
        if cached.exists():
            return cached
    shared = paths.shared_data_dir()
    if shared is not None:
        found = safe_join(shared, relative, "data path")
        if found.exists():
            return found
    return None


def data_path(relative: str) -> Path:
    """Like `find_data_file`, with a one-line error that names the fetch command when nothing has it."""
    found = find_data_file(relative)
    if found is not None:
        return found
    name = Path(relative).parts[0]
    if name in CATALOG:
        what = f"data set {name}" if relative.rstrip("/") == name else f"data set {name} ({relative})"
        raise MissingDataError(f"{what} not found; {fetch_hint(name)}")
    raise MissingDataError(
        f"{relative} not found in the shared data folder; set POSTTRAIN_PROBE_DATA to the folder holding it "
        f"(fetchable data sets: {', '.join(CATALOG)})"
    )


def data_set_dir(name: str) -> Path:
    """The folder of data set `name` (cache first, then the shared data folder); one-line error naming the fetch
    command when it is in neither."""
    get_data_set(name)
    return data_path(name)


def where(name: str) -> str:
    """'cache', 'shared' or 'missing': where `data_set_dir(name)` finds data set `name` now."""
    found = find_data_file(name)
    if found is None:
        return "missing"
    return "cache" if found.parent == data_cache_root() else "shared"


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError  # pragma: no cover


def catalog_rows() -> list[dict[str, str | int]]:
    """One dict per data set for `data list` (name, read_by, license, size, source, where)."""
    return [
        {
            "name": d.name,
            "read_by": d.read_by,
            "license": d.license,
            "size": d.size,
            "source": d.source,
            "where": where(d.name),
        }
        for d in CATALOG.values()
    ]


def format_catalog(rows: list[dict[str, str | int]]) -> str:
    """`catalog_rows()` as an aligned text table."""
    head = ("name", "size", "license", "where", "read by", "source")
    table = [
        (
            str(r["name"]),
            human_size(int(r["size"])),
            str(r["license"]),
            str(r["where"]),
            str(r["read_by"]),
            str(r["source"]),
        )  # fmt: skip
        for r in rows
    ]
    widths = [max(len(row[i]) for row in (head, *table)) for i in range(len(head) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1] for row in (head, *table)]
    return "\n".join(line.rstrip() for line in lines)
