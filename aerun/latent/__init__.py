"""What the commands that read a trained run share: the run and its data (`runs`), the
codes of a split (`codes`), densities fitted to codes (`samplers`), TensorBoard's projector."""
