"""ResNet50 backbone (keras.applications) with a small classification head, built as one flat graph.

Flat means the backbone's layers live in the same functional graph as the head, so Grad-CAM can ask for
`conv5_block3_out` directly.
"""

import keras
from keras import layers

from .architecture import (LOGITS_LAYER, Architecture, Stage, backbone_weights_note, classifier_head,
                           pretrained_backbone_options, register)

GRADCAM_LAYER = "conv5_block3_out"
# The "caffe" preprocessing ResNet50's ImageNet weights expect: 0..255, BGR, minus the ImageNet mean.
# Our inputs are gray (three equal channels), so the channel order does not matter, only the means.
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)


def build(input_shape=(224, 224, 3), num_classes=2, backbone_weights=None, imagenet_preprocessing=None,
          dropout=0.5, dense_units=256):
    """`backbone_weights`: None (from scratch), "imagenet" (Keras' download and cache) or a file path.

    `imagenet_preprocessing` (default: whenever backbone weights are given) adds the input scaling those
    weights expect; rebuilding a trained model passes it without downloading the weights again.
    """
    if imagenet_preprocessing is None:
        imagenet_preprocessing = backbone_weights is not None
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    if imagenet_preprocessing:
        x = layers.Rescaling(255.0, name="to_0_255")(x)
        x = layers.Normalization(mean=IMAGENET_BGR_MEAN, variance=(1.0, 1.0, 1.0), name="imagenet_mean")(x)
    backbone = keras.applications.ResNet50(include_top=False, weights=backbone_weights, input_tensor=x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(backbone.output)
    x = layers.BatchNormalization(name="head_bn")(x)
    x = layers.Dropout(dropout, name="head_dropout1")(x)
    x = layers.Dense(dense_units, activation="relu", kernel_initializer="he_normal", name="head_dense")(x)
    x = layers.Dropout(dropout, name="head_dropout2")(x)
    outputs = classifier_head(x, num_classes)
    return keras.Model(inputs, outputs, name="resnet50")


def set_backbone_trainable(model, trainable_from: str | None):
    """Freeze the backbone up to (not including) the first layer whose name starts with `trainable_from`.

    None freezes the whole backbone (stage 1 of transfer learning: the head alone learns). Batch-norm
    layers stay frozen in the frozen part so their ImageNet statistics are kept.
    """
    head = {"avg_pool", "head_bn", "head_dropout1", "head_dense", "head_dropout2", LOGITS_LAYER, "probabilities"}
    reached = False
    for layer in model.layers:
        if layer.name in head:
            layer.trainable = True
            continue
        if trainable_from is not None and layer.name.startswith(trainable_from):
            reached = True
        layer.trainable = reached


def options_for_rebuild(options: dict) -> dict:
    """Rebuild the trained graph (with the ImageNet input scaling if it was trained with one), no download."""
    return {"imagenet_preprocessing": options.get("backbone_weights") is not None}


def training_stages(options: dict, epochs: int, head_epochs: int) -> list[Stage]:
    """From scratch: one stage. With pretrained backbone weights: the head alone first, then the last
    residual stage (conv5) unfrozen at a hundredth of the learning rate."""
    if options.get("backbone_weights") is None:
        return [Stage("all layers", epochs)]
    return [Stage("head only", head_epochs, lambda model: set_backbone_trainable(model, None)),
            Stage("fine-tune conv5", epochs, lambda model: set_backbone_trainable(model, "conv5_"), 0.01)]


ARCHITECTURE = register(Architecture(
    name="resnet50",
    build=build,
    default_input_size=224,
    gradcam_layer=GRADCAM_LAYER,
    description="keras.applications.ResNet50 without its top, then global average pooling, batch "
                "normalisation, dropout, Dense(256, ReLU), dropout and a 2-way softmax",
    options_for_training=pretrained_backbone_options,
    options_for_rebuild=options_for_rebuild,
    training_stages=training_stages,
    weights_note=backbone_weights_note("ResNet50", "With internet, `--backbone-weights imagenet` trains the "
                                                   "two-stage transfer-learning recipe instead."),
    # The last map of the conv3 stage, chosen on pneumo 0.1's ResNet50: its conv5 features put photos,
    # documents and MRI slices among the X-rays (scores 0.01-0.1), conv3's set them 3.8 to 45 times past the
    # threshold (pneumo/prediction/ood.py). The released 0.2 model keeps it and flags them all (tests/test_ood.py).
    ood_layer="conv3_block4_out",
))
