"""``predict_map``: classification maps of a remote scene, complete and with modalities missing.

The checkpoint predicts every labelled pixel of ``<scene>_scene.arrow`` (``map_pixels="all"``: every pixel)
once per map setting (``map_missing``; default: complete data, then each modality missing from every
pixel). Windows are cut from the scene a batch at a time (:meth:`SceneWindows.batch`, a block of rows read at a
time) and each batch's argmax is put into the map as it comes, so memory is bounded by the batch. Per
setting the run folder receives

* ``map_<setting>.npy`` — the predicted label raster (H, W) int16: class 0..K-1, -1 = not predicted;
* ``map_<setting>.png`` — the map, the ground truth and an error mask side by side, legend with the class
  names (fixed palette, :func:`mamol.experiments.plots.palette`); with map coordinates and a scale bar when the
  scene has a georeference;
* ``map_<setting>.tif`` — when the scene has a georeference (converted from GeoTIFF / ENVI): class codes 1..K
  (0 = not predicted, nodata) with the scene's CRS and transform, the palette as colour table and the class
  names as tags (:mod:`mamol.experiments.geotiff`);

plus ``ground_truth.npy`` (-1 = unlabelled) and ``maps.json``: per setting OA × 100 over every labelled
pixel predicted and each class's accuracy × 100 over them (by class name), OA over the test split's pixels (which
equals ``test_only``'s OA with that modality missing from every test sample), pixel counts and pixels per second.
Settings are named as the keys spell modalities (``no_hsi``; titles "hsi missing": :func:`plots.missing_label`).

Each map is written as soon as it is predicted, and ``maps.json`` rewritten with it (``maps``: the finished ones,
``pending``: the settings still to draw, ``complete``). A command stopped by SIGTERM or SIGINT keeps the finished
maps and that record; only the temporary file of a write it cut short goes (and the folder, if no map was done).
"""
from __future__ import annotations

import logging
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mamol import train
from mamol.console import recorded, save_to
from mamol.data import catalogue
from mamol.data.remote import SceneWindows
from mamol.errors import CommandInterrupted, ConfigError
from mamol.experiments import plots
from mamol.experiments.geotiff import write_map_geotiff
from mamol.experiments.predict import Predictor, task_infos
from mamol.files import atomic_write, write_json
from mamol.methods.budget import settle_run
from mamol.missing import MODALITY_ALIASES, missing_code
from mamol.runs import new_run_folder, write_run_record
from mamol.settings import RunSettings, from_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MapOptions:
    """Which pixels and which missing settings to map (``map_pixels``, ``map_missing``)."""

    map_pixels: Literal["labelled", "all"]
    map_missing: tuple[str, ...] | None  # None = complete data plus each modality missing alone


@dataclass(frozen=True)
class MapSetting:
    """One map: the modalities missing from every pixel, their code, and the file tag."""

    missing: tuple[str, ...]
    code: int

    @property
    def name(self) -> str:
        """``complete`` or ``no_<modalities>`` (the file tag)."""
        return "complete" if not self.missing else "no_" + "_".join(self.missing)

    @property
    def title(self) -> str:
        """"complete data" or "hsi missing" (:func:`mamol.experiments.plots.missing_label`)."""
        return "complete data" if not self.missing else plots.missing_label(self.missing)


def map_settings(options: MapOptions, modalities: Sequence[str]) -> list[MapSetting]:
    """The maps to draw; ConfigError naming ``map_missing`` for an unknown modality or all of them missing."""
    modalities = tuple(modalities)
    given = options.map_missing if options.map_missing is not None else ("none", *modalities)
    if not given:
        raise ConfigError("map_missing=[]: name at least one setting, e.g. ['none'] (or None for the default)")
    out: list[MapSetting] = []
    for entry in given:
        tokens = [t for t in re.split(r"[_+,\s]+", entry.strip().lower()) if t]
        if tokens in (["none"], ["complete"]):
            tokens = []
        names = [MODALITY_ALIASES.get(t, t) for t in tokens]
        unknown = [t for t, n in zip(tokens, names) if n not in modalities]
        if unknown or len(set(names)) != len(names):
            raise ConfigError(f"map_missing entry {entry!r}: expected 'none' or modalities of this run "
                              f"{list(modalities)} joined by '_' (e.g. '{modalities[0]}'), found {tokens}")
        missing = tuple(m for m in modalities if m in names)  # code order
        if len(missing) == len(modalities):
            raise ConfigError(f"map_missing entry {entry!r} removes every modality of {list(modalities)}; "
                              f"keep at least one")
        setting = MapSetting(missing, missing_code(missing, modalities))
        if setting not in out:
            out.append(setting)
    return out


@dataclass
class SceneMap:
    """A predicted map and its scores."""

    setting: MapSetting
    prediction: np.ndarray  # (H, W) int16, -1 = not predicted
    oa_labelled: float | None  # OA x 100 over the labelled pixels predicted
    class_accuracy: dict[str, float | None]  # class name -> accuracy x 100 over its labelled pixels predicted
    oa_test: float | None  # OA x 100 over the test split's pixels
    pixels: int  # pixels predicted
    seconds: float  # wall time of the prediction (data and model)

    def record(self) -> dict[str, Any]:
        return {"setting": self.setting.name, "missing": list(self.setting.missing), "code": self.setting.code,
                "OA_labelled": self.oa_labelled, "class_accuracy_labelled": dict(self.class_accuracy),
                "OA_test_pixels": self.oa_test, "pixels": self.pixels,
                "seconds": round(self.seconds, 3), "pixels_per_s": round(self.pixels / max(self.seconds, 1e-9), 1)}


def _oa(prediction: np.ndarray, truth: np.ndarray) -> float | None:
    """OA x 100 over the pixels that have both a label and a prediction (None when there are none)."""
    scored = (truth >= 0) & (prediction >= 0)
    return round(100.0 * float((prediction[scored] == truth[scored]).mean()), 4) if scored.any() else None


def class_accuracy(prediction: np.ndarray, truth: np.ndarray, class_names: Sequence[str]
                   ) -> dict[str, float | None]:
    """Per class (by name), accuracy x 100 over its labelled pixels that have a prediction: the share predicted
    as that class (None for a class with no such pixel)."""
    scored = (truth >= 0) & (prediction >= 0)
    out: dict[str, float | None] = {}
    for k, name in enumerate(class_names):
        mine = scored & (truth == k)
        out[name] = round(100.0 * float((prediction[mine] == k).mean()), 4) if mine.any() else None
    return out


def _text(oa: float | None) -> str:
    return "n/a" if oa is None else f"{oa:.2f}"


def predict_maps(s: RunSettings, options: MapOptions, predictor: Predictor, progress: bool | None = None,
                 done: Callable[[SceneMap, np.ndarray], None] | None = None) -> tuple[list[SceneMap], np.ndarray]:
    """The maps of ``map_settings`` for the run's scene, and the ground truth raster (H, W) (-1 = unlabelled);
    ``done(map, truth)`` is called as each map is finished."""
    name = s.data.datasets[0]
    info = predictor.infos[0]
    wanted = map_settings(options, info.modalities)
    scenes = [SceneWindows.from_settings(s.data, s.missing.fill, name, setting.code,
                                         labelled_only=options.map_pixels == "labelled") for setting in wanted]
    truth = scenes[0].label_raster()  # (H, W)
    entry = catalogue.entry(name, s.data.root)
    test_rows, test_cols = entry.dataset(entry, s.data, s.missing, "test").positions()
    maps = []
    disable = True if progress is False else None
    with tqdm(total=sum(len(sc) for sc in scenes), desc="maps: predicting", unit="pixel", disable=disable) as bar:
        for setting, scene in zip(wanted, scenes):
            bar.set_postfix_str(setting.name)
            loader = DataLoader(scene, batch_size=s.hardware.per_device_batch, shuffle=False,
                                num_workers=s.data.num_workers, collate_fn=scene.collate)
            started = time.perf_counter()
            prediction = np.full(truth.shape, -1, dtype=np.int16)

            def put(logits: Tensor, fields: dict[str, Tensor], prediction: np.ndarray = prediction) -> None:
                prediction[fields["row"].numpy(), fields["col"].numpy()] = logits.argmax(1).numpy()  # (B,)

            predictor.predict(loader, ("row", "col"), bar, each=put)  # batch by batch: nothing scene-sized kept
            seconds = time.perf_counter() - started
            maps.append(SceneMap(setting, prediction, _oa(prediction, truth),
                                 class_accuracy(prediction, truth, info.class_names),
                                 _oa(prediction[test_rows, test_cols], truth[test_rows, test_cols]),
                                 len(scene), seconds))
            if done is not None:
                done(maps[-1], truth)
    return maps, truth


def _save(path: Path, array: np.ndarray) -> Path:
    with atomic_write(path, "wb") as handle:
        np.save(handle, array)
    return path


def write_map(m: SceneMap, truth: np.ndarray, class_names: Sequence[str], folder: Path,
              georeference: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """``map_<setting>.npy`` and ``.png`` of one map into ``folder``, and ``.tif`` when the scene has a
    ``georeference`` (the Arrow metadata's; :mod:`mamol.experiments.geotiff`)."""
    title = f"{m.setting.title}: OA {_text(m.oa_labelled)} (labelled), {_text(m.oa_test)} (test pixels)"
    paths = {f"{m.setting.name}.npy": _save(folder / f"map_{m.setting.name}.npy", m.prediction),
             f"{m.setting.name}.png": plots.map_figure(m.prediction, truth, class_names, title,
                                                       folder / f"map_{m.setting.name}.png", georeference)}
    if georeference is not None:
        paths[f"{m.setting.name}.tif"] = write_map_geotiff(m.prediction, class_names, georeference,
                                                           folder / f"map_{m.setting.name}.tif")
    return paths


def write_record(maps: Sequence[SceneMap], truth: np.ndarray, class_names: Sequence[str], folder: Path,
                 meta: Mapping[str, Any], pending: Sequence[str] = ()) -> Path:
    """``maps.json``: the finished maps' records, the settings still ``pending`` and whether all are done."""
    h, w = truth.shape
    return write_json(folder / "maps.json", {
        **meta, "shape": [h, w], "class_names": list(class_names),
        "palette": [[round(float(c), 4) for c in rgb] for rgb in plots.palette(len(class_names))],
        "maps": [m.record() for m in maps], "pending": list(pending), "complete": not pending})


def write(maps: Sequence[SceneMap], truth: np.ndarray, class_names: Sequence[str], folder: Path,
          meta: Mapping[str, Any], georeference: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """``map_<setting>.npy`` / ``.png`` (/ ``.tif`` with a ``georeference``) per map, ``ground_truth.npy`` and
    ``maps.json`` into ``folder``."""
    paths = {"ground_truth": _save(folder / "ground_truth.npy", truth.astype(np.int16))}
    for m in maps:
        paths.update(write_map(m, truth, class_names, folder, georeference))
    paths["json"] = write_record(maps, truth, class_names, folder, meta)
    return paths


@contextmanager
def _signals_raise(what: Callable[[], str]) -> Iterator[None]:
    """SIGTERM and SIGINT raise :class:`CommandInterrupted` (message: ``what()``) where the command is, so the
    write they cut short removes its temporary file; the previous handlers come back after. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise CommandInterrupted(signal.Signals(signum).name, signum, what())

    previous = {n: signal.signal(n, stop) for n in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for n, handler in previous.items():
            signal.signal(n, handler)


@recorded
def command(config: Mapping[str, Any]) -> str:
    """``python run.py predict_map with ... load_path=...``: predict the maps, write into a new run folder."""
    s = train.resolve_settings(config, evaluation=True)
    if s.kind != "remote":
        raise ConfigError(f"predict_map draws remote scenes; datasets={list(s.data.datasets)} is image-text data")
    options = from_config(MapOptions, config)
    infos = task_infos(s)
    s = settle_run(s, infos)  # budget=matched/lora: the capacity the checkpoint was trained with
    map_settings(options, infos[0].modalities)  # refuse bad settings before loading anything
    SceneWindows.from_settings(s.data, s.missing.fill, s.data.datasets[0])  # refuse a missing scene file early
    predictor = Predictor(s, infos, "predict_map")
    names = [m.name for m in map_settings(options, infos[0].modalities)]
    meta = {"scene": s.data.datasets[0], "checkpoint": str(s.run.load_path), "method": s.method.name,
            "pixels": options.map_pixels}
    folder = new_run_folder(s.run.log_dir, s.run.exp_name)
    save_to(folder)
    finished: list[SceneMap] = []
    georeference = infos[0].metadata.get("georeference")  # None: converted from .mat, no GeoTIFF

    def done(m: SceneMap, truth: np.ndarray) -> None:  # each map on disk as soon as it is predicted
        if not finished:
            _save(folder / "ground_truth.npy", truth.astype(np.int16))
        write_map(m, truth, infos[0].class_names, folder, georeference)
        finished.append(m)
        write_record(finished, truth, infos[0].class_names, folder, meta, names[len(finished):])

    def kept() -> str:
        if not finished:
            return f"during predict_map before any map was finished: nothing kept (removed {folder})"
        return (f"during predict_map: the finished maps {names[:len(finished)]} are kept in {folder} (maps.json "
                f"lists them); {names[len(finished):]} were not drawn")

    try:
        write_run_record(folder, s)
        with _signals_raise(kept):
            maps, truth = predict_maps(s, options, predictor, done=done)
    except BaseException:
        if not finished:
            shutil.rmtree(folder, ignore_errors=True)
        for name in names[len(finished):]:  # a map cut short between its two files
            for suffix in ("npy", "png", "tif"):
                (folder / f"map_{name}.{suffix}").unlink(missing_ok=True)
        raise
    lines = [f"{m.setting.title:<22s} OA {_text(m.oa_labelled)} over {int((truth >= 0).sum())} labelled pixels, "
             f"{_text(m.oa_test)} over the test pixels; {m.pixels} pixels at {m.record()['pixels_per_s']:.0f}/s"
             for m in maps]
    files = "map_<setting>.npy/.png" + ("/.tif" if georeference is not None else "")
    return "\n".join(lines) + f"\nwritten to {folder} ({files}, ground_truth.npy, maps.json)"
