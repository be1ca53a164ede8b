//! Rotary position embeddings in the Hugging Face convention ("rotate half"): within each head of
//! width D, element j pairs with element j + D/2 and the pair turns by angle pos * theta^(-2j/D).

pub use crate::model::llama::rope_table;

/// out (N, H*D) = rotate(inp (N, H*D)) row n by position pos[n], using the tables cos, sin (P, D/2)
#[allow(clippy::too_many_arguments)]
pub fn rope_forward(
    out: &mut [f32],
    inp: &[f32],
    pos: &[usize],
    cos: &[f32],
    sin: &[f32],
    n: usize,
    heads: usize,
    d: usize,
) {
    let half = d / 2;
    for i in 0..n {
        let c = &cos[pos[i] * half..(pos[i] + 1) * half];
        let s = &sin[pos[i] * half..(pos[i] + 1) * half];
        for h in 0..heads {
            let o = (i * heads + h) * d;
            for j in 0..half {
                let (x1, x2) = (inp[o + j], inp[o + j + half]);
                out[o + j] = x1 * c[j] - x2 * s[j];
                out[o + j + half] = x2 * c[j] + x1 * s[j];
            }
        }
    }
}

/// dinp (N, H*D) += rotate back(dout (N, H*D)): the transpose of the forward rotation
#[allow(clippy::too_many_arguments)]
pub fn rope_backward(
    dinp: &mut [f32],
    dout: &[f32],
    pos: &[usize],
    cos: &[f32],
    sin: &[f32],
    n: usize,
    heads: usize,
    d: usize,
) {
    let half = d / 2;
    for i in 0..n {
        let c = &cos[pos[i] * half..(pos[i] + 1) * half];
        let s = &sin[pos[i] * half..(pos[i] + 1) * half];
        for h in 0..heads {
            let o = (i * heads + h) * d;
            for j in 0..half {
                let (g1, g2) = (dout[o + j], dout[o + j + half]);
                dinp[o + j] += g1 * c[j] + g2 * s[j];
                dinp[o + j + half] += g2 * c[j] - g1 * s[j];
            }
        }
    }
}
