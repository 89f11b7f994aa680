"""The panel state (`panel.panel_state`, pure logic) copied onto the module's widgets.

Only attribute assignments on `ui` (the module's `childWidgetVariables`), so it runs, and is tested,
on plain objects outside the application too.
"""

from __future__ import annotations

from typing import Any

from . import mask_request
from .panel import PanelState

ERROR_STYLE = "color: #c62828"
WARNING_STYLE = "color: #b26a00"


def apply_panel_state(ui: Any, state: PanelState, settings: Any) -> None:
    """Show, hide, enable and label the widgets as `state` says; `settings` is the parameter node (its
    mask-organ check boxes enable their sliders)."""
    for widget in (ui.inputSegmentationLabel, ui.inputSegmentationSelector):
        widget.visible = state.show_input_segmentation
    for widget in (ui.inputLabelmapLabel, ui.inputLabelmapSelector):
        widget.visible = state.show_input_labelmap
    ui.generatedMapGroupBox.visible = state.show_generated_map
    for widget in (ui.maskModelFolderLabel, ui.maskModelFolderPathLineEdit):
        widget.visible = state.show_mask_model_folder
    for organ in mask_request.ORGANS:
        use, size = mask_request.parameter_names(organ)
        getattr(ui, f"{size}Slider").enabled = getattr(settings, use)
    ui.maskTumorSizeSlider.enabled = settings.maskTumor != mask_request.NO_TUMOR
    ui.generateMapButton.enabled = state.generate_map_enabled
    ui.generateMapButton.toolTip = state.generate_map_tooltip
    ui.fieldOfViewLabel.text = state.field_of_view
    ui.sizeCheckLabel.text = state.size_check_text
    ui.sizeCheckLabel.styleSheet = (ERROR_STYLE if state.size_check_is_error
                                    else WARNING_STYLE if state.size_check_is_warning else "")
    for widget in (ui.serverUrlLabel, ui.serverUrlLineEdit, ui.serverTokenFileLabel,
                   ui.serverTokenFilePathLineEdit, ui.testConnectionButton, ui.connectionStatusLabel):
        widget.enabled = state.server_widgets_enabled
    ui.weightsStatusLabel.text = state.weights.text
    ui.downloadWeightsButton.enabled = state.download_enabled
    ui.editPhantomButton.enabled = state.edit_phantom_enabled
    ui.generateButton.enabled = state.generate_enabled
    ui.generateButton.toolTip = state.generate_tooltip
    ui.addTumorButton.enabled = state.add_tumor_enabled
    ui.inpaintButton.enabled = state.inpaint_enabled
    ui.exportButton.enabled = state.export_enabled
