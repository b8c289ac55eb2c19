"""A person's wardrobe on the catalog: items (photos the catalog's model tagged), the items that repeat each other,
the gaps, which items combine into looks, and the whole as a graph.

- :mod:`~fashattr.wardrobe.items`: adding photos as named items (``fashattr wardrobe add``) and reading a
  wardrobe back with its model's attributes and embeddings.
- :mod:`~fashattr.wardrobe.redundant`: groups of items that agree on the attributes that matter and look alike.
- :mod:`~fashattr.wardrobe.gaps`: what is owned per attribute value, what never, and how diverse each group is.
- :mod:`~fashattr.wardrobe.looks`: the looks a person wore, a pairwise compatibility scorer learned from them,
  fill-in-the-blank, and the outfit-compatibility literature's measures (AUC, FITB accuracy).
- :mod:`~fashattr.wardrobe.graph`: items, attribute values and categories as a graph (GraphML, node-link JSON).
"""
