"""Plain ``nn.Module`` building blocks: backbones, attention capture, gates, CAM heads."""
