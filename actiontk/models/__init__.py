"""Models: the networks of the two methods, one module per family, and the backbones they read.

- :mod:`~actiontk.models.backbones`: CNN backbones (``vgg16``, ``resnet101``, ``resnet50``, ``resnet18``) that
  return intermediate feature maps by layer name, a registry of their specs and the weights' preprocessing.
- :mod:`~actiontk.models.configs`: the architecture options of the three trained networks, each declared once
  (torch-free); the training stages' configs extend them.
- :mod:`~actiontk.models.conv3d`: the deeply supervised multi-level 3D convnet of the joint-attention method
  ("Action Recognition with Joint Attention on Multi-Level Deep Features", Sec. 3.2).
- :mod:`~actiontk.models.joint_lstm`: that method's joint attention LSTM over the 3D-conv cubes (Sec. 3.3).
- :mod:`~actiontk.models.gap`: the (generalized) attentional pooling head for still images, with its pose branch,
  and :class:`~actiontk.models.gap.GAPNet`, the network ``train-gap`` trains around it.

Nothing is imported here on purpose: torch and torchvision take seconds to import, and the CLI imports
this package's modules only inside the commands that need them.
"""
