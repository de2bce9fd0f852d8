"""The summary table of ``benchmarks/text_to_image.sh`` (its results folder, run folder, budget,
mode, guidance strengths and the held-out run's strength as arguments): summary.json and summary.md."""
import datetime
import json
import os
import sys
from pathlib import Path


COMMANDS = {"gpu": "bash benchmarks/text_to_image.sh", "cpu": "MODE=cpu bash benchmarks/text_to_image.sh",
            "smoke": "SMOKE=1 bash benchmarks/text_to_image.sh"}


def pct(v):
    return "n/a" if v is None else f"{100 * v:.1f}"


def main(res, run, budget, mode, ws, w_held) -> int:
    res, run, budget = Path(res), Path(run), float(budget)
    evals = {w: json.loads((res / f"eval_w{w}.json").read_text()) for w in ws.split()}
    held = json.loads((res / f"held_out_w{w_held}.json").read_text())
    state = json.loads((run / "text" / "state.json").read_text())
    summary = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "mode": mode, "budget_seconds": budget,
               "steps": state["step"], "config": state["config"], "guidance": evals, "held_out": held}
    (res / "summary.json").write_text(json.dumps(summary, indent=1))
    first = next(iter(evals.values()))
    extra = os.environ.get("TRAIN_ARGS", "")
    command = f"TRAIN_ARGS='{extra}' {COMMANDS[mode]}" if extra else COMMANDS[mode]
    ae = state["config"].get("autoencoder")
    latent = f", on the latents of the autoencoder {ae} (scale factor {state['config'].get('scale_factor')})" if ae else ""
    clip = "clip_style_score" in first["prompts"]
    L = [f"# Text-to-image on Fashion-MNIST captions ({mode}, {summary['date']})", "",
         f"EDM, `--condition text`: a U-Net of base width {state['config']['unet']['base_channels']} with "
         f"cross-attention at {state['config']['unet']['attention_resolutions']}, a "
         f"{state['config']['text']['layers']}-layer text encoder of width {state['config']['text']['width']} trained "
         f"jointly{latent}; {budget:.0f} s of training = {state['step']} steps. Command: `{command}`.", "",
         f"{first['n_samples']} samples (Heun 18) for the captions of the first {first['n_samples']} test images, "
         f"against {first['n_reference']} test images; {first['fd_label']}. Class accuracy: the shipped classifier "
         "finds the class the prompt names; attribute accuracy: the caption attribute functions measured on the "
         "sample agree with each attribute word the prompt says.", "",
         "| guidance w | FD | class acc. % | attribute acc. % | brightness | size | facing | pattern |"
         + (" CLIP-style score |" if clip else ""),
         "|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if clip else "")]
    for w, e in evals.items():
        p = e["prompts"]
        L.append(f"| {w} | {e['fd']:.2f} | {pct(p['class_accuracy'])} | {pct(p['attribute_accuracy'])} | "
                 f"{pct(p['brightness_accuracy'])} | {pct(p['size_accuracy'])} | {pct(p['facing_accuracy'])} | "
                 f"{pct(p['pattern_accuracy'])} |" + (f" {p['clip_style_score']:.2f} |" if clip else ""))
    h = held["prompts"]["held_out"]
    L += ["", f"Held-out combinations (never said together in training: dark sandal, small ankle boot, patterned bag), "
          f"{h['n']} prompts at w = {w_held}: class accuracy {pct(h['class_accuracy'])} %, attribute accuracy "
          f"{pct(h['attribute_accuracy'])} % (brightness {pct(h['brightness_accuracy'])}, size "
          f"{pct(h['size_accuracy'])}, pattern {pct(h['pattern_accuracy'])})."]
    if clip and "clip_style_score_ceiling" in first["prompts"]:
        p = first["prompts"]
        L += ["", f"CLIP-style score (minidiff caption model) of real test images with their own captions (ceiling): "
              f"{p['clip_style_score_ceiling']:.2f}; with shuffled captions (floor): {p['clip_style_score_floor']:.2f}."]
    (res / "summary.md").write_text("\n".join(L) + "\n")
    print("\n".join(L))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
