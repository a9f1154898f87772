"""`tadsr export`: the ONNX graph, OpenVINO IR or TensorRT engine of the one-step model."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import typer
from rich.console import Console

from tadsr_cli.base.errors import ConfigError, EngineUnavailableError

FORMATS = ("onnx", "openvino", "tensorrt")


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)


def export_command(
    model: str = typer.Option(None, "--model", "-m", help="Model name or .safetensors file (default: embedded)."),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx (graph), openvino (IR .xml + .bin) or tensorrt (prebuilt engine)."),
    output: Path | None = typer.Option(None, "--output", "-o",
                                       help="ONNX file / OpenVINO .xml to write (default: the engine cache next to the model; "
                                       "openvino: ./<model>.xml)."),
    tile: int | None = typer.Option(None, "--tile", help="LQ tile size traced / the TensorRT profile's tile "
                                    "(default: 64 px for ONNX, 128 for TensorRT; a multiple of the model's)."),
    dynamic: bool = typer.Option(True, "--dynamic/--static", help="ONNX: dynamic height/width (any multiple of "
                                 "the model's LQ multiple) or a fixed --tile size. Batch is always dynamic."),
    batch: int = typer.Option(4, "--batch", help="TensorRT: largest batch of tiles in the profile."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (17 or newer)."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, fp16 or bf16 (TensorRT); onnx: fp32, or "
                                  "fp16 (a float16 copy for GPUs)."),
    device: str = typer.Option("auto", "--device", help="TensorRT: the CUDA device to build for."),
    tolerance: float = typer.Option(1e-3, "--tolerance", help="Fail when ONNX vs torch max abs error exceeds this."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check the ONNX graph against torch."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Export the whole one-step graph to ONNX, or prebuild a TensorRT engine (cached for --backend tensorrt)."""
    from tadsr_cli.models import model_cache

    fmt = fmt.lower().strip()
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if precision not in ("fp32", "fp16", "bf16"):
        raise ConfigError(f"--precision {precision!r}: choose fp32, fp16 or bf16")
    console = Console(stderr=True)
    model_path = model_cache.resolve_model_path(model)
    net = model_cache.resolve_model(str(model_path))
    result: dict[str, object] = {"model": str(model_path), "format": fmt, "precision": precision}

    if fmt == "tensorrt":
        from tadsr_cli.engines.tensorrt_engine import import_tensorrt, prebuild

        import_tensorrt()
        engine = prebuild(net, device=device, precision=precision, tile=tile or 128, batch=batch,
                          model_path=model_path, opset=opset)
        result.update({"engine_folder": str(engine.folder), "gpu": engine.gpu_name, "built": engine.builds,
                       "profile": engine.default_profile.as_dict() if engine.default_profile else None})
        _report(console, result, as_json, f"TensorRT engine ready in {engine.folder} "
                f"({'built' if engine.builds else 'cached'})")
        return

    if fmt == "openvino":
        _export_openvino(net, model_path, output, precision, opset, console, result, as_json)
        return

    if precision == "bf16":
        raise EngineUnavailableError("ONNX export: bf16 is not offered (fp32, or fp16 for GPUs)")
    from tadsr_cli.engines.onnx_engine import ensure_fp16, ensure_onnx
    from tadsr_cli.engines.onnx_export import default_tile, export_onnx

    multiple = int(net.lq_multiple)
    tile = default_tile(multiple) if tile is None else tile
    if output is None:
        path, report = ensure_onnx(net, model_path=model_path, opset=opset, dynamic=dynamic, tile=tile,
                                   verify=verify, tolerance=tolerance)
        if report is None:
            console.print(f"cached export found: {path}", highlight=False)
    else:
        output = output.expanduser()
        if output.suffix.lower() != ".onnx":
            raise ConfigError(f"-o {output}: the output file must end in .onnx")
        from tadsr_cli.engines.cache import model_fingerprint

        target = output if precision == "fp32" else output.with_name(output.stem + "-fp32.onnx")
        report = export_onnx(net, target, tile=tile, dynamic=dynamic, opset=opset, verify=verify,
                             tolerance=tolerance, metadata={"model_sha256": model_fingerprint(net, model_path)},
                             log=lambda msg: console.print(msg, highlight=False))
        path = target
    if report is not None:
        result.update(report.as_dict())
    if precision == "fp16":
        half = ensure_fp16(path)
        if output is not None and half != output:
            shutil.move(str(half), str(output))
            half = output
        result["fp16_path"] = str(half)
        path = half
    result["path"] = str(path)
    err = result.get("max_abs_error")
    err_text = f", max abs error vs torch {err:.2e}" if isinstance(err, float) else ""
    _report(console, result, as_json, f"ONNX graph: {path}{err_text}")


def _export_openvino(net: object, model_path: Path, output: Path | None, precision: str, opset: int,
                     console: Console, result: dict[str, object], as_json: bool) -> None:
    """The one-step graph as OpenVINO IR with f32 weights; the precision is chosen when OpenVINO compiles it."""
    from tadsr_cli.engines.openvino_engine import save_ir

    if precision != "fp32":
        raise ConfigError("--format openvino writes f32 weights; pick bf16 when compiling (OpenVINO's "
                          "INFERENCE_PRECISION_HINT, as --backend openvino --precision bf16 does)")
    xml = (output.expanduser() if output is not None else Path.cwd() / f"{model_path.stem}.xml")
    if xml.suffix.lower() != ".xml":
        raise ConfigError(f"-o {xml}: the OpenVINO IR file must end in .xml (its weights go beside it as .bin)")
    save_ir(net, xml, model_path=model_path, opset=opset)
    result.update({"path": str(xml), "weights": str(xml.with_suffix(".bin"))})
    _report(console, result, as_json, f"OpenVINO IR: {xml} (+ {xml.with_suffix('.bin').name})")


def _report(console: Console, result: dict[str, object], as_json: bool, line: str) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    else:
        console.print(line, highlight=False)
