"""A method defined outside cxrlab, in a few dozen lines: the dual encoder plus one extra head and one extra loss term.

Used by test_methods.py to show that a new method trains with the engine, reloads with `load_run` and is evaluated by
`07_retrieval_eval` beside the baseline, with no engine or evaluation code copied. It registers itself on import, so
`get_method('residual_head', module='method_plugin')` finds it from a saved run.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from cxrlab.models import Method, build_model, register_method
from cxrlab.train import InfoNCELoss


class ResidualHeadModel(nn.Module):
    "A dual encoder whose image embedding gets a learned residual correction."
    def __init__(self, dual: nn.Module, hidden: int):
        super().__init__()
        D = dual.image_tower.proj.out_features
        self.dual, self.head = dual, nn.Sequential(nn.Linear(D, hidden), nn.GELU(), nn.Linear(hidden, D))
        self.head.param_role = 'head'  # a new layer on top of the towers: trains at head_lr_mult
        self.logit_scale = dual.logit_scale

    def encode_image(self, images):
        out = self.dual.encode_image(images)
        g = out['global'] + self.head(out['global'])
        return {**out, 'global': g, 'embeds': F.normalize(g, dim=-1)}

    def encode_text(self, input_ids, attention_mask):
        return self.dual.encode_text(input_ids, attention_mask)

    def embed(self, batch):
        return {'image': self.encode_image(batch['image']), 'text': self.encode_text(batch['input_ids'], batch['attention_mask'])}

    def post_step(self):
        self.dual.post_step()

    def forward(self, batch):
        e = self.embed(batch)
        return {'image_embeds': e['image']['embeds'], 'text_embeds': e['text']['embeds'],
                'logit_scale': self.dual.scale(), 'residual': self.head(e['image']['global']), **e}


class InfoNCEPlusResidual(nn.Module):
    "InfoNCE + weight x mean squared size of the residual (keeps the correction small)."
    def __init__(self, weight: float = 0.1):
        super().__init__()
        self.infonce, self.weight = InfoNCELoss(), weight

    def forward(self, outputs, batch):
        terms = self.infonce(outputs, batch)
        small = outputs['residual'].pow(2).mean()
        return {**terms, 'loss': terms['loss'] + self.weight * small, 'residual_l2': small.detach()}


RESIDUAL_HEAD = register_method(Method(
    'residual_head', module='method_plugin',
    build=lambda cfg, backbone=None: ResidualHeadModel(backbone or build_model(cfg['backbone']), cfg['model']['hidden']),
    loss=lambda opts: InfoNCEPlusResidual(**opts),
    defaults={'model': {'hidden': 32}, 'loss': {'weight': 0.1}},
    description='test method: CLIP with a residual head on the image embedding'))
