"""Runs of the main window: generate, inpaint, download weights, phantom template, generated label map,
and their results.

A mixin of `MainWindow`. Jobs run in a worker process (or on a server) through `JobController`; a
result opens as a new document that keeps the user's place: same slices and zoom when the grid is the
same, the undo history when the labels are unchanged, and the CT before inpainting for the
before/after toggle.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from PyQt5 import QtCore, QtWidgets

from MAISIEngine import labels as maisi_labels
from MAISIEngine.errors import MaisiError
from MAISIEngine.io.nifti import write_volume
from MAISISynthLib import params
from MAISISynthLib.execution import check_connection, runner_for

from MAISIDesktop import loading
from MAISIDesktop.dialogs import PhantomSettings
from MAISIDesktop.generate_panel import SOURCE_GENERATED
from MAISIDesktop.document import Document
from MAISIDesktop.history import HistoryEntry


MASK_JOB = "generate-mask"


class JobActionsMixin:
    # -- starting ---------------------------------------------------------------------------------
    def _new_run_dir(self, kind: str) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for n in range(1, 1000):
            path = self.runs_dir / f"{stamp}-{kind}-{n}"
            if not path.exists():
                path.mkdir(parents=True)
                return path
        raise MaisiError(f"cannot create a run folder in {self.runs_dir}", "free up or choose another runs folder")

    def _start_job(self, kind: str, build) -> bool:
        if self.jobs.is_running():
            self.report_error("a job is already running", "wait for it or press Cancel")
            return False
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            run_dir = self._new_run_dir(kind)
        except OSError as exc:
            self.report_error(f"cannot write to the runs folder {self.runs_dir} ({exc.strerror})",
                              "set MAISI_DESKTOP_RUNS to a writable folder")
            return False
        try:
            job = build(run_dir)
            runner = runner_for(job, self.generate_panel.execution_settings(), self.jobs.runner)
            self.jobs.start(job, run_dir, runner)
        except MaisiError as exc:
            shutil.rmtree(run_dir, ignore_errors=True)
            self.report_error(exc.message, exc.hint)
            return False
        self._job_kind, self._job_spec, self._job_started = kind, job, time.monotonic()
        self._job_document = self.document
        self.generate_panel.set_running(True)
        self.status_area.set_running(True)
        return True

    def start_generate(self) -> bool:
        """Generate a CT for the current label map (or a phantom template) in a worker process."""
        panel = self.generate_panel
        from_template = panel.from_template
        if not from_template and self.study is None:
            if panel.source_combo.currentText() == SOURCE_GENERATED:
                self.report_error("no label map has been generated yet", "click 'Generate label map' first")
            else:
                self.report_error("there is no label map to generate from",
                                  "open a label map, start from a phantom template, or choose 'Phantom template'")
            return False

        def build(run_dir: Path) -> dict[str, Any]:
            mask = None
            if not from_template:
                assert self.study is not None
                mask = write_volume(run_dir / "input_labels.nii.gz", self.study.labels, self.study.affine,
                                    description="label map from MAISI Desktop", dtype=np.uint8)
            return panel.generate_job(run_dir / "output", mask)

        return self._start_job("generate", build)

    def start_generate_map(self) -> bool:
        """Draw a label map from the sliders' anatomy sizes; it opens as the label map to paint into."""
        if not self.confirm_discard("generating a new label map"):
            return False
        return self._start_job(MASK_JOB, lambda run_dir: self.generate_panel.mask_job(run_dir / "output"))

    def follow_painted_tumor(self) -> str | None:
        """Set the inpainting tumor type to the tumor label painted (the largest one when several)."""
        document = self.document
        tumors = document.tumor_labels_present() if document is not None else []
        if not tumors:
            return None
        panel = self.generate_panel
        names = {label: name for name, label in maisi_labels.TUMOR_TYPES.items()}
        if panel.tumor_label in tumors and len(tumors) > 1:
            return names[panel.tumor_label]  # the user's choice among several painted types stands
        index = panel.tumor_type.findData(names[tumors[0]])
        if index >= 0:
            panel.tumor_type.setCurrentIndex(index)
        return names[tumors[0]]

    def start_inpaint(self) -> bool:
        """Inpaint the painted tumor into the current CT (the type follows the painted tumor label)."""
        study = self.study
        if study is None or study.ct is None:
            self.report_error("inpainting needs a CT with its label map",
                              "open a CT with labels (or a generated result) first")
            return False
        if self.document is not None and not (study.labels == self.generate_panel.tumor_label).any():
            self.follow_painted_tumor()
        tumor_label = self.generate_panel.tumor_label
        tumor = study.labels == tumor_label
        if not tumor.any():
            self.report_error(f"there is no {maisi_labels.name_of(tumor_label)} in the label map",
                              "paint one with the brush or place one with the tumor tool first")
            return False

        def build(run_dir: Path) -> dict[str, Any]:
            image = write_volume(run_dir / "input_image.nii.gz", study.ct, study.affine, dtype=np.float32)
            labels = write_volume(run_dir / "input_labels.nii.gz", study.labels, study.affine, dtype=np.uint8)
            tumor_path = write_volume(run_dir / "input_tumor.nii.gz", tumor.astype(np.uint8), study.affine,
                                      dtype=np.uint8)
            return self.generate_panel.inpaint_job(run_dir / "output", image, labels, tumor_path)

        return self._start_job("inpaint", build)

    def start_download(self) -> bool:
        return self._start_job("download", lambda _run_dir: params.download_job(self.generate_panel.model))

    def new_phantom(self, settings: PhantomSettings, with_ct: bool = True) -> bool:
        """Start a procedural torso from the engine (label map, and its CT when `with_ct`).

        The phantom is drawn by the worker process (a large one takes seconds); the study opens when
        it is done, like a generation result.
        """
        if not self.confirm_discard("starting from a template"):
            return False
        self._phantom_request = (settings, with_ct)

        def build(run_dir: Path) -> dict[str, Any]:
            job = params.phantom_job(settings.region, tuple(settings.size), tuple(settings.spacing), settings.seed,
                                     run_dir / "output")
            job["tumors"] = list(settings.tumors)
            return job

        return self._start_job("phantom", build)

    def cancel_job(self) -> None:
        self.jobs.cancel()

    def test_connection(self) -> bool:
        """Reach the chosen server and check the token; the answer goes beside the button."""
        panel = self.generate_panel
        QtWidgets.QApplication.setOverrideCursor(QtCore.Qt.WaitCursor)
        try:
            answer = check_connection(panel.execution_settings())
        except MaisiError as exc:
            panel.set_connection_status(f"Not connected: {exc.message}", ok=False)
            self.report_error(exc.message, exc.hint)
            return False
        finally:
            QtWidgets.QApplication.restoreOverrideCursor()
        panel.set_connection_status(answer, ok=True)
        self.statusBar().showMessage(answer, 8000)
        return True

    # -- results ----------------------------------------------------------------------------------
    def _run_name(self, kind: str) -> str:
        """A result's name: the input it came from (or the template) and what was done, with the seed."""
        job, source = self._job_spec, self._job_document
        template = job.get("template")
        if isinstance(template, dict):
            base = f"template-{template.get('region', 'phantom')}"
        elif source is not None:
            base = source.study.name
        else:
            base = "maisi"
        done = {"generate": "generated", "inpaint": "inpainted"}.get(kind, kind)
        seed = job.get("seed")
        return f"{base}_{done}" + (f"_seed{seed}" if seed is not None else "")

    def open_result(self, kind: str, result: dict[str, Any], name: str | None = None) -> bool:
        """Open a run's result in place of the document it came from, keeping the user's place."""
        study = self._guarded(loading.load_result, result)
        if study is None:
            return False
        study.name = name or self._run_name(kind)
        previous = self._job_document if self._job_document is not None else self.document
        document = Document(study)
        same_grid = previous is not None and previous.study.shape == study.shape
        same_labels = same_grid and np.array_equal(previous.study.labels, study.labels)
        current = self.document
        if current is not None and not (current is previous and same_labels):
            # Edits made while the job ran (or another file opened since) would be replaced.
            if not self.confirm_discard("opening the run's result (it stays in the History tab either way)"):
                self.statusBar().showMessage("The result is kept in the History tab", 8000)
                return False
        if same_labels:
            document.take_over(previous)
        if same_grid and kind == "inpaint" and previous.study.ct is not None:
            document.before_ct = previous.study.ct
        self.set_document(document, keep_view=same_grid)
        return True

    def _job_ended(self) -> None:
        self.generate_panel.set_running(False)
        self.status_area.set_running(False)

    def _job_succeeded(self, result: dict) -> None:
        kind, run_dir = self._job_kind, self.jobs.run_dir
        self._job_ended()
        if kind == MASK_JOB:  # the run folder keeps the map and its provenance
            self._open_generated_map(result)
            self.jobFinished.emit("succeeded")
            return
        if kind in ("download", "phantom"):
            if kind == "phantom":
                self._open_phantom(result)  # loads into memory; the run's files are not kept
            if run_dir is not None:
                shutil.rmtree(run_dir, ignore_errors=True)
            self.generate_panel.refresh_weights_status()
            self.jobFinished.emit("succeeded")
            return
        name = self._run_name(kind)
        entry = HistoryEntry(kind=kind, result=dict(result, name=name), job=self._job_spec,
                             duration_s=time.monotonic() - self._job_started,
                             run_dir=str(run_dir) if run_dir else None)
        try:
            entry.save()
        except OSError:
            pass
        self.history.add_entry(entry)
        self.open_result(kind, result, name)
        self._job_document = None
        self.jobFinished.emit("succeeded")

    def _open_phantom(self, result: dict) -> None:
        settings, with_ct = self._phantom_request
        if with_ct and result.get("ct"):
            study = self._guarded(loading.load_ct, result["ct"], result["mask"])
        else:
            study = self._guarded(loading.load_label_map, result["mask"])
        if study is None:
            return
        study.name = f"phantom-{settings.region}-seed{settings.seed}"
        study.sources = {"template": f"phantom {settings.region} seed {settings.seed}"}
        self.set_study(study)

    def _open_generated_map(self, result: dict) -> None:
        """The generated map as a new document (fresh history): painting, eraser and undo work on it."""
        study = self._guarded(loading.load_label_map, result.get("labels") or "")
        if study is None:
            return
        provenance = dict(result.get("provenance_data") or {})
        seed = provenance.get("seed", "?")
        study.name = f"generated-map-seed{seed}"
        # Not "labels": Save asks where, instead of writing into the run folder.
        study.sources = {"generated": f"mask model {provenance.get('model', '?')} seed {seed}"}
        study.provenance = provenance
        self.set_study(study)
        missing = list(result.get("missing") or [])
        text = (f"The generated map lacks {', '.join(missing)}: generate again with another seed, or paint them"
                if missing else "Label map generated: paint into it, then Generate makes the CT from it")
        self.statusBar().showMessage(text, 10000)

    def _job_failed(self, error: dict) -> None:
        self._job_ended()
        run_dir = self.jobs.run_dir
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)
        message = str(error.get("message") or "the job failed")
        hint = str(error.get("hint") or "")
        details = str(error.get("stderr_tail") or "")
        self.generate_panel.stage_label.setText(f"Failed: {message}")
        self.report_error(message, hint, details)
        self.jobFinished.emit("failed")

    def _job_cancelled(self) -> None:
        self._job_ended()
        self.generate_panel.set_progress(0.0, "Cancelled")
        self.jobFinished.emit("cancelled")

    def open_history_entry(self, entry: HistoryEntry) -> bool:
        if entry.is_report:  # a batch folder or evaluation report: its window, the views stay as they are
            return self.open_report_entry(entry) is not None
        if not self.confirm_discard("opening another run"):
            return False
        study = self._guarded(loading.load_result, entry.result)
        if study is None:
            return False
        study.name = str(entry.result.get("name") or study.name)
        self.set_study(study)
        return True
