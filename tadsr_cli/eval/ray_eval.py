"""`tadsr eval --ray ADDRESS`: a model method's images upscaled by the cluster's workers, measured here.

The driver reads each LQ image (eval reads them anyway, for pairing and the figure), sends the pixels to a worker
(`ray_worker.Worker.array`: the same `Upscaler` as a local eval, warmed up once per worker) and measures what comes
back with the same suite, in the same order of images. Times are the workers' own (one image on one worker), so
the s/img column stays comparable with a local run on the same kind of machine.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from tadsr_cli.base.errors import ConfigError, TadsrError
from tadsr_cli.eval import images as imio
from tadsr_cli.models.checkpoints import read_model_config
from tadsr_cli.pipeline.batch import error_line
from tadsr_cli.pipeline.image_read import read_samples, to_float01
from tadsr_cli.pipeline.ray_cluster import connected, import_ray, worker_shape
from tadsr_cli.pipeline.ray_files import put_file
from tadsr_cli.pipeline.ray_pool import Unit, WorkerPool
from tadsr_cli.pipeline.settings import RunSettings


def run_model_on_cluster(runner: Any, method: Any, result: Any, suite: Any) -> None:
    """`_Runner.run_model` with the upscaling done by Ray workers (`runner`: the eval runner)."""
    from tadsr_cli.models.catalog import REGISTRY, model_name

    cfg = runner.cfg
    ray = import_ray()
    model_file = Path(method.model_file or "")
    entry = REGISTRY.get(model_name(method.model))
    embedded = entry is not None and entry.embedded_file
    settings = RunSettings(model=replace(cfg.engine, model=method.model if embedded else None, steps=method.steps),
                           tiles=replace(cfg.tiles), color_fix=cfg.color_fix)
    if read_model_config(model_file).scale != cfg.scale:
        raise ConfigError(f"model {method.model} is x{read_model_config(model_file).scale} but --scale is "
                          f"{cfg.scale}")
    stems = result.pairing.stems
    with connected(cfg.ray) as info:
        shape = worker_shape(info, cfg.engine.device, cfg.ray_workers)
        shipped = None if embedded else put_file(ray, model_file, f"model:{model_file.resolve()}")
        pool = WorkerPool(ray, shape, settings, ["image"], shipped)
        try:
            engine = pool.start()["image"]
            method.precision = engine.get("precision") or method.precision
            method.device = f"{engine.get('device') or 'cpu'} x{shape.count} (Ray: {info.describe()})"
            ordered = _InOrder(runner, method, result, suite)
            runner._tick(method, 0, len(stems))
            for unit, value, exc in pool.map_unordered(ordered.units()):
                ordered.arrived(unit.key, value, exc)
            pool.close()
        finally:
            pool.close(graceful=False)  # after an error or Ctrl-C (a no-op after the close above)
    runner._tick(method, len(stems), len(stems))


class _InOrder:
    """Results are measured in the order of the images (records, figure crops and errors as a local run)."""

    def __init__(self, runner: Any, method: Any, result: Any, suite: Any) -> None:
        self.runner, self.method, self.result, self.suite = runner, method, result, suite
        self.stems: list[str] = list(result.pairing.stems)
        self.waiting: dict[str, tuple[Any, BaseException | None]] = {}
        self.unreadable: set[str] = set()
        self.next = 0

    def units(self) -> Any:
        for stem in self.stems:
            try:
                lq = to_float01(read_samples(self.result.pairing.lq[stem]))
            except TadsrError as exc:
                self.runner._error(self.result, self.method, stem, exc)
                self.unreadable.add(stem)
                continue
            yield Unit(stem, "array", (lq,))

    def arrived(self, stem: str, value: Any, exc: BaseException | None) -> None:
        self.waiting[stem] = (value, exc)
        while self.next < len(self.stems):
            stem = self.stems[self.next]
            if stem in self.unreadable:
                self.next += 1
                continue
            if stem not in self.waiting:
                return
            self._measure(stem, *self.waiting.pop(stem))
            self.next += 1
            self.runner._tick(self.method, self.next, len(self.stems))

    def _measure(self, stem: str, value: Any, exc: BaseException | None) -> None:
        runner, method, result = self.runner, self.method, self.result
        if exc is not None:
            result.errors.append({"image": stem, "method": method.name, "error": error_line(exc)})
            return
        out, seconds = value
        where = f"{method.name}: {result.pairing.lq[stem]}"
        try:
            runner.finish_image(result, self.suite, method, stem, imio.quantize_u8(out), seconds, where)
        except TadsrError as err:
            runner._error(result, method, stem, err)
