"""The seed note's weight recorder (its first listing), verbatim but for the base class.

This is how users dump weights today, and what weightwatch is measured
against: ``tests/run/test_seeddump.py`` reads folders it writes, and
``benchmarks/recording.py`` times it.  Keep it as the note has it (its
2-space indents included); only ``tf.keras.callbacks`` became ``keras.callbacks``.
"""

import json
import os

import keras


class WeightRecorderCallback(keras.callbacks.Callback):
    def __init__(self, save_dir, filename_prefix='weights_epoch_'):
      super(WeightRecorderCallback, self).__init__()
      self.save_dir = save_dir
      self.filename_prefix = filename_prefix
      os.makedirs(self.save_dir, exist_ok=True)

    def on_epoch_end(self, epoch, logs=None):
        weights_dict = {}
        for layer in self.model.layers:
            if hasattr(layer, 'get_weights'):
                layer_weights = layer.get_weights()
                if layer_weights:
                    weights_dict[layer.name] = [w.tolist() for w in layer_weights]
        filepath = os.path.join(self.save_dir, f'{self.filename_prefix}{epoch+1}.json')
        with open(filepath, 'w') as f:
             json.dump(weights_dict, f)
