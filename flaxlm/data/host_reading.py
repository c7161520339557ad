"""What each host of a pod reads of `train_files` (`data.host_reading`).

  * `"all"` (the default): every host reads, tokenizes and packs the whole corpus and takes its
    slice of one global stream (pipeline.py): the order does not depend on the host count, but
    every host reads everything.
  * `"own_units"`: the corpus is dealt out in *units* — a Parquet row group, any other corpus
    file whole, a `tfds:` spec, a TFRecord file of a `flaxlm prepare` directory — and host p of P
    reads only the units at positions i ≡ p (mod P) of the listing of all specs
    (`sources.iter_documents(shard=(p, P))`, `sources.prepared_dataset(shard=...)`). It packs and
    shuffles its own examples into its own endless stream: local example l of host p is masked
    with the key l·P + p, unique over the hosts. With one host that is the `"all"` stream.

Resume. Every global batch of G = B·P examples takes B from each host's stream, so after e global
examples every host has consumed exactly e / P of its own (`local_start`): a resumed run continues
each stream where it stopped. Another host count deals the units out differently, so that count no
longer says what a host has left: `plan` returns the host count as a run record, which the trainer
writes into the workdir's config.json and compares when the run resumes.
"""

from __future__ import annotations

from collections.abc import Sequence

from flaxlm.data import sources
from flaxlm.errors import FlaxlmError

ALL = "all"
OWN_UNITS = "own_units"
MODES = (ALL, OWN_UNITS)
RECORD_KEY = "host_reading"  # the workdir config.json entry `plan` returns


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise FlaxlmError(f"data.host_reading={mode!r}: expected one of {', '.join(MODES)}")


def count_units(specs: Sequence[str]) -> int:
    """How many units `specs` deal out to hosts (reads Parquet footers and prepared.json files)."""
    if any(sources.is_prepared(s) for s in specs):
        return sources.prepared_num_files([s for s in specs if sources.is_prepared(s)])
    return sources.num_units(specs)


def check_units(specs: Sequence[str], process_count: int) -> int:
    """The number of units, refused when a host would get none."""
    units = count_units(specs)
    if units < process_count:
        raise FlaxlmError(
            f"data.host_reading={OWN_UNITS}: data.train_files hold {units} unit(s) for "
            f"{process_count} hosts, so a host would read nothing (a unit is a Parquet row group, "
            "another corpus file, a tfds: spec or a prepared TFRecord file): split the corpus "
            "into more files, write Parquet with smaller row groups, or run `flaxlm prepare "
            f"--num-shards N` with N ≥ {process_count}; or keep data.host_reading={ALL}")
    return units


def plan(mode: str, specs: Sequence[str], process_count: int) -> tuple[dict, tuple[str, ...]]:
    """(the run record, the notes) of a training run reading `specs` on `process_count` hosts.
    `"all"` records nothing, so its workdirs' config.json stay as they were."""
    check_mode(mode)
    if mode == ALL:
        return {}, ()
    units = check_units(specs, process_count)
    hosts = f"{process_count} host{'s' if process_count > 1 else ''}"
    return ({
        RECORD_KEY: f"{OWN_UNITS} on {hosts}"
    }, (f"each of {process_count} host(s) reads its own units of train_files "
        f"({units} in all; data.host_reading={OWN_UNITS})", ))


def local_start(start_example: int, process_count: int) -> int:
    """Where each host's own stream resumes after `start_example` global examples."""
    if start_example % process_count:
        raise FlaxlmError(
            f"start_example={start_example} is not a multiple of the {process_count} hosts: "
            f"with data.host_reading={OWN_UNITS} every global batch takes as many examples "
            "from each host, so the run that stopped there had another host count")
    return start_example // process_count
