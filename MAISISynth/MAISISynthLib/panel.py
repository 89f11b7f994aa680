"""What the module panel shows before anything runs: button states, weight status, setting checks.

Pure logic, so that it can be tested without Qt, and so that a fresh Slicer (no engine packages yet)
computes it: it imports only the engine's contract modules (see `boundary`). The widget copies the
returned `PanelState` onto its widgets and adds nothing of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from MAISIEngine.errors import MaisiError
from MAISIEngine.presets import load_preset

from . import mask_request, params

INPUT_TEMPLATE = "Phantom template"
INPUT_SEGMENTATION = "Segmentation"
INPUT_LABELMAP = "Label map volume"
INPUT_GENERATED = "Generated label map"
"""A label map drawn by the mask-generation model from anatomy sizes; it becomes the input segmentation."""
INPUT_KINDS = (INPUT_TEMPLATE, INPUT_SEGMENTATION, INPUT_LABELMAP, INPUT_GENERATED)


@dataclass(frozen=True)
class PanelInputs:
    """The choices the panel state depends on (node selections reduced to 'chosen or not')."""

    model: str
    input_kind: str = INPUT_TEMPLATE
    has_input_segmentation: bool = False
    has_input_labelmap: bool = False
    size: tuple[int, int, int] = (128, 128, 128)
    spacing: tuple[float, float, float] = (3.0, 3.0, 3.0)
    on_server: bool = False
    busy: bool = False
    has_tumor_volume: bool = False
    has_tumor_segmentation: bool = False
    has_export_volume: bool = False
    mask_model: str = mask_request.MASK_MODELS[0]
    mask_model_folder: str = ""


@dataclass(frozen=True)
class PanelState:
    show_input_segmentation: bool
    show_input_labelmap: bool
    field_of_view: str
    size_check_text: str
    size_check_is_error: bool
    size_check_is_warning: bool
    server_widgets_enabled: bool
    weights: params.WeightsSummary
    download_enabled: bool
    edit_phantom_enabled: bool
    generate_enabled: bool
    generate_tooltip: str
    add_tumor_enabled: bool
    inpaint_enabled: bool
    export_enabled: bool
    show_generated_map: bool = False
    show_mask_model_folder: bool = False
    generate_map_enabled: bool = False
    generate_map_tooltip: str = ""
    check: params.SettingsCheck = field(default_factory=params.SettingsCheck)


def check_settings(model: str, size: tuple[int, int, int], spacing: tuple[float, float, float],
                   input_kind: str = INPUT_TEMPLATE) -> params.SettingsCheck:
    """The engine's size and spacing checks for a model; an unknown model is an error, not an exception.

    A segmentation or label map input is resampled onto the chosen grid, so a size the model does not
    take is fitted (a note, with the fitted grid) rather than refused; a phantom template's is refused.
    """
    try:
        preset = load_preset(model)
    except MaisiError as exc:
        return params.SettingsCheck(errors=[exc.one_line()])
    return params.check_size_and_spacing(preset, size, spacing, label_map=input_kind != INPUT_TEMPLATE)


def panel_state(inputs: PanelInputs) -> PanelState:
    """Everything the panel shows for `inputs`; never raises for a bad model name or size."""
    check = check_settings(inputs.model, inputs.size, inputs.spacing, inputs.input_kind)
    if inputs.on_server:
        weights = params.WeightsSummary(True, False, "weights on the server")
    else:
        weights = params.weights_summary(inputs.model)
    kind = inputs.input_kind
    input_ready = (kind == INPUT_TEMPLATE
                   or (kind in (INPUT_SEGMENTATION, INPUT_GENERATED) and inputs.has_input_segmentation)
                   or (kind == INPUT_LABELMAP and inputs.has_input_labelmap))
    busy = inputs.busy
    generated = kind == INPUT_GENERATED
    map_problem = None
    if generated:  # the map is drawn on the panel's grid: the mask model's own grid rule applies
        map_problem = check.errors[0] if check.errors else mask_request.grid_problem(
            inputs.mask_model, inputs.mask_model_folder, inputs.size, inputs.spacing)
    if generated and not inputs.has_input_segmentation:
        generate_tooltip = "Click 'Generate label map' first: the CT is generated from that map"
    else:
        generate_tooltip = check.text() or "Generate a synthetic CT from the label map"
    return PanelState(
        show_input_segmentation=kind in (INPUT_SEGMENTATION, INPUT_GENERATED),
        show_input_labelmap=kind == INPUT_LABELMAP,
        field_of_view=params.field_of_view_text(inputs.size, inputs.spacing),
        size_check_text="\n".join(check.errors) if check.errors else "\n".join([*check.notes, *check.warnings]),
        size_check_is_error=bool(check.errors),
        size_check_is_warning=bool(check.warnings) and not check.errors,
        server_widgets_enabled=inputs.on_server,
        weights=weights,
        download_enabled=weights.downloadable and not weights.ready and not busy,
        edit_phantom_enabled=not busy,
        generate_enabled=not busy and input_ready and check.ok,
        generate_tooltip=generate_tooltip,
        add_tumor_enabled=inputs.has_tumor_segmentation,
        inpaint_enabled=not busy and inputs.has_tumor_volume and inputs.has_tumor_segmentation,
        export_enabled=inputs.has_export_volume and not busy,
        show_generated_map=generated,
        show_mask_model_folder=generated and inputs.mask_model == mask_request.MODEL_FOLDER,
        generate_map_enabled=generated and not busy and map_problem is None,
        generate_map_tooltip=map_problem or ("Draw a label map with the mask-generation model on this grid; "
                                             "it opens as an editable segmentation"),
        check=check,
    )
