"""YOLOv4 (Bochkovskiy et al., 2020): the network, its published constants, and loaders for the weight formats
users have (Darknet's ``yolov4.weights`` and the state dict of the Tianxiaomo/pytorch-YOLOv4 port)."""
