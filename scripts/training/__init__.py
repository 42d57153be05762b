"""What training optimises and how it picks its checkpoint.

* :mod:`.losses` - the official loss: L1 + LPIPS (VGG16), with its fallback; the optional re-projection consistency.
* :mod:`.model_selection` - the validation metric that picks ``models/model.pt`` and its direction.
* :mod:`.defaults` - the defaults that depend on the machine (train.json's ``machine_defaults``) and the learning rate.
* :mod:`.recipe` - the recipe a run really uses (recorded in the checkpoints' sidecars) and the paper's weights.
"""

from scripts.utils.exports import lazy_exports

_EXPORTS = {
    "VGG16_CONFIG": "losses",
    "LPIPS_TAPS": "losses",
    "LPIPS_CHANNELS": "losses",
    "LPIPS_EPS": "losses",
    "LPIPSVGG": "losses",
    "PerX2CTLoss": "losses",
    "ReprojectionConsistency": "losses",
    "ConsistencySliceInferer": "losses",
    "SliceLossMetric": "model_selection",
    "LOWER_IS_BETTER": "model_selection",
    "metric_sign": "model_selection",
    "metric_cmp": "model_selection",
    "split_metrics": "model_selection",
    "by_machine": "defaults",
    "preset_reason": "defaults",
    "learning_rate": "defaults",
    "RecipeError": "recipe",
    "pretrained_file": "recipe",
    "training_recipe": "recipe",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
