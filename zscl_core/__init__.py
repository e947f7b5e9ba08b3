"""zscl_core: ZSCL continual updates of CLIP models (Zheng et al., ICCV 2023), as a library.

No web, queue or database code lives here: the service and the worker call these functions.
"""

from .averaging import interpolate, running_mean, uniform_mean
from .config import UpdateConfig
from .data import LabelledImages, UnlabelledImages, class_name_from_folder, scan_image_folder
from .errors import (ConfigError, DatasetError, ModelLoadError, UpdateCancelled,
                     VersionIntegrityError, WorkAbandoned, ZSCLError)
from .gate import GatePolicy, GateReport, PairedScore, evaluate_gate
from .evaluate import (accuracy, accuracy_from_features, correct, correct_from_features, drift,
                       encode_images)
from .heads import DEFAULT_TEMPLATES, HeadCache, build_head, check_template, encode_texts
from .losses import feature_distillation, l2_weight_constraint, scaled_cosine_logits, soft_cross_entropy
from .methods import METHODS, Method, get_method
from .metrics import average_accuracy, last_accuracy, summarize, transfer
from .loading import load_model
from .models import LoadedModel, build_from_spec
from .reference import (ReferenceSet, default_reference_texts, images_from_folder,
                        texts_from_classnames, texts_from_file)
from .train import StepInfo, UpdateResult, freeze_norm_stats_, run_update, trainable_parameters
from .versions import list_versions, load_version, read_manifest, save_version

__all__ = [
    "interpolate", "running_mean", "uniform_mean",
    "UpdateConfig",
    "LabelledImages", "UnlabelledImages", "class_name_from_folder", "scan_image_folder",
    "ConfigError", "DatasetError", "ModelLoadError", "UpdateCancelled", "VersionIntegrityError",
    "WorkAbandoned", "ZSCLError",
    "accuracy", "accuracy_from_features", "correct", "correct_from_features", "drift",
    "encode_images",
    "GatePolicy", "GateReport", "PairedScore", "evaluate_gate",
    "DEFAULT_TEMPLATES", "HeadCache", "build_head", "check_template", "encode_texts",
    "feature_distillation", "l2_weight_constraint", "scaled_cosine_logits", "soft_cross_entropy",
    "METHODS", "Method", "get_method",
    "average_accuracy", "last_accuracy", "summarize", "transfer",
    "LoadedModel", "build_from_spec", "load_model",
    "ReferenceSet", "default_reference_texts", "images_from_folder", "texts_from_classnames",
    "texts_from_file",
    "StepInfo", "UpdateResult", "freeze_norm_stats_", "run_update", "trainable_parameters",
    "list_versions", "load_version", "read_manifest", "save_version",
]
