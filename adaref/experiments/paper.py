"""The paper's numbers (§4, Tables 1-4), printed beside adaref's own.

Copied from the paper's §4.2-4.4. Tables 2-4 are on Criteo only. Table 3 leaves the AUC of "w/ controller" blank; its log-loss
and FLOPs equal Table 2's SparseMoE(k=3), whose AUC is 0.8132, Table 1's AdaEnsemble.
Figure 5 is a plot without numbers in the text: performance increases with the depth up
to L = 4 (at k = 3) and with k up to 3 (at L = 4).
"""
from __future__ import annotations

__all__ = ["SCALE_NOTE", "TABLE1", "TABLE2", "TABLE3", "TABLE4", "FIGURE5_NOTE", "FIGURE4_NOTE"]

SCALE_NOTE = ("The paper's numbers are on the full data sets (Criteo 45M rows; D = 16, L = 4, k = 3, "
              "batch 4096): the scales differ, so compare orderings and gaps, not values.")

#: dataset -> row name -> (AUC, log-loss)
TABLE1 = {
    "criteo": {
        "LR": (0.7924, 0.4577), "FM": (0.8030, 0.4487), "DNN": (0.8051, 0.4461),
        "Wide&Deep": (0.8062, 0.4451), "DeepFM": (0.8069, 0.4445), "DeepCrossing": (0.8068, 0.4456),
        "DCN": (0.8056, 0.4457), "PNN": (0.8083, 0.4433), "xDeepFM": (0.8077, 0.4439),
        "AutoInt": (0.8053, 0.4462), "FiBiNET": (0.8082, 0.4439), "xDeepInt": (0.8111, 0.4408),
        "DCN V2": (0.8086, 0.4433), "AdaEnsemble": (0.8132, 0.4394),
    },
    "avazu": {
        "LR": (0.7533, 0.3952), "FM": (0.7652, 0.3889), "DNN": (0.7627, 0.3895),
        "Wide&Deep": (0.7637, 0.3889), "DeepFM": (0.7665, 0.3879), "DeepCrossing": (0.7628, 0.3891),
        "DCN": (0.7661, 0.3880), "PNN": (0.7663, 0.3882), "xDeepFM": (0.7668, 0.3878),
        "AutoInt": (0.7650, 0.3883), "FiBiNET": (0.7652, 0.3886), "xDeepInt": (0.7672, 0.3876),
        "DCN V2": (0.7662, 0.3882), "AdaEnsemble": (0.7687, 0.3865),
    },
    "ipinyou": {
        "LR": (0.7692, 0.005605), "FM": (0.7737, 0.005576), "DNN": (0.7732, 0.005749),
        "Wide&Deep": (0.7763, 0.005589), "DeepFM": (0.7749, 0.005609), "DeepCrossing": (0.7706, 0.005657),
        "DCN": (0.7758, 0.005682), "PNN": (0.7783, 0.005584), "xDeepFM": (0.7772, 0.005664),
        "AutoInt": (0.7732, 0.005758), "FiBiNET": (0.7756, 0.005679), "xDeepInt": (0.7790, 0.005567),
        "DCN V2": (0.7765, 0.005593), "AdaEnsemble": (0.7807, 0.005550),
    },
}

#: Table 2 (Criteo): row -> (AUC, log-loss, FLOPs per example)
TABLE2 = {
    "SparseMoE(k=1)": (0.8096, 0.4423, 2.26e6),
    "SparseMoE(k=2)": (0.8121, 0.4400, 4.14e6),
    "SparseMoE(k=3)": (0.8132, 0.4394, 6.02e6),
    "SparseMoE(k=4)": (0.8133, 0.4393, 7.09e6),
    "DenseMoE": (0.8133, 0.4392, 9.78e6),
    "Ensemble": (0.8120, 0.4401, 12.15e6),
    "Dense Expert Only": (0.8050, 0.4463, 3.71e6),
    "Cross Expert Only": (0.8086, 0.4433, 3.36e6),
    "Polynomial Expert Only": (0.8111, 0.4408, 3.32e6),
    "CNN Expert Only": (0.8022, 0.4501, 1.11e6),
    "MHSA Expert Only": (0.8051, 0.4465, 2.17e6),
}

#: Table 3 (Criteo): row -> (AUC or None where the paper leaves it blank, log-loss, FLOPs)
TABLE3 = {
    "w/ controller": (None, 0.4394, 6.02e6),
    "w/o controller": (0.8128, 0.4396, 8.58e6),
}

#: Table 4 (Criteo, L = 4): fraction of examples exiting at each depth
TABLE4 = (0.0653, 0.1936, 0.6643, 0.0768)

FIGURE4_NOTE = ("The paper's Figure 4 (Criteo, L = 4) has no numbers in its text: it shows each "
                "SparseMoE layer using a different mix of experts.")
FIGURE5_NOTE = ("The paper's Figure 5 (Criteo) has no numbers in its text: AUC rises and log-loss "
                "falls with the depth up to L = 4 (at k = 3) and with k up to 3 (at L = 4), "
                "with diminishing gains.")
