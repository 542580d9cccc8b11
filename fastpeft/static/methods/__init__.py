"""Each method's static model: its launch variants, the host calls that issue them, and the
sequences (frozen base, PEFT or eager) its fused launches are compared with."""
