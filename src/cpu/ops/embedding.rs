//! Token and position embeddings.

/// out (N, C) = wte[ids[i]] (V, C) + wpe[pos[i]] (P, C); without `wpe` only the token rows
pub fn embedding_forward(
    out: &mut [f32],
    ids: &[u32],
    pos: &[u32],
    wte: &[f32],
    wpe: Option<&[f32]>,
    c: usize,
) {
    for (i, o) in out[..ids.len() * c].chunks_exact_mut(c).enumerate() {
        let t = ids[i] as usize * c;
        o.copy_from_slice(&wte[t..t + c]);
        if let Some(wpe) = wpe {
            let p = pos[i] as usize * c;
            for (x, &y) in o.iter_mut().zip(&wpe[p..p + c]) {
                *x += y;
            }
        }
    }
}

/// dwte (V, C) += scatter of dout (N, C) by ids; dwpe (P, C) += scatter by pos
pub fn embedding_backward(
    dwte: &mut [f32],
    dwpe: Option<&mut [f32]>,
    dout: &[f32],
    ids: &[u32],
    pos: &[u32],
    c: usize,
) {
    for (i, d) in dout[..ids.len() * c].chunks_exact(c).enumerate() {
        let t = ids[i] as usize * c;
        for (x, &y) in dwte[t..t + c].iter_mut().zip(d) {
            *x += y;
        }
    }
    if let Some(dwpe) = dwpe {
        for (i, d) in dout[..pos.len() * c].chunks_exact(c).enumerate() {
            let p = pos[i] as usize * c;
            for (x, &y) in dwpe[p..p + c].iter_mut().zip(d) {
                *x += y;
            }
        }
    }
}
