"""Local models: cv2.dnn and LiteRT networks, embeddings, wrappers around callables."""
