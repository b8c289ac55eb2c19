"""Models: a timm backbone, optional shared layers, one head per attribute group."""

from fashattr.models.model import AttributeModel, create_model

__all__ = ["AttributeModel", "create_model"]
