import NN
import TensorCore

// Layers of the convolutional zoo computed channels-last: a map (B, H, W, C) or tokens (B, N, C),
// with the weights in PyTorch's convolution shapes so that state_dicts load by name.

/// A 1x1 convolution on a channels-last map (B, ..., C): the same product as a Linear, with the
/// weight kept in PyTorch's convolution shape (out, in, 1, 1).
public final class PointwiseConv: Module {
    public let weight: Parameter
    public let bias: Parameter?
    init(_ inChannels: Int, _ outChannels: Int, bias: Bool = true, initializer: Initializer) {
        let (w, b) = initializer.linear(inFeatures: inChannels, outFeatures: outChannels)
        weight = Parameter(w.reshaped([outChannels, inChannels, 1, 1]))
        self.bias = bias ? Parameter(b) : nil
    }
    func callAsFunction(_ x: Tensor) -> Tensor {
        Tensor.linear(x, weight: weight.value.reshaped([weight.shape[0], weight.shape[1]]), bias: bias?.value)
    }
    /// gelu(self(x)) as one op (`Tensor.linearGELU`, bit-identical to the two).
    func gelu(_ x: Tensor) -> Tensor {
        guard let bias else { return self(x).gelu() }
        return Tensor.linearGELU(x, weight: weight.value.reshaped([weight.shape[0], weight.shape[1]]), bias: bias.value)
    }
}

/// NesT's LayerNorm over channels, g and b shaped (1, C, 1, 1), applied to channels-last tokens.
public final class ChannelsLastNorm: Module {
    public let g: Parameter
    public let b: Parameter
    init(_ channels: Int) {
        g = Parameter(.ones([1, channels, 1, 1]))
        b = Parameter(.zeros([1, channels, 1, 1]))
    }
    func callAsFunction(_ x: Tensor) -> Tensor { channelsLastLayerNorm(x, g: g, b: b) }
}

/// LayerNorm over the channels of a channels-last map or tokens (B, ..., C) with vit-pytorch's
/// channel-norm parameters g and b shaped (1, C, 1, 1) (NesT's and CvT's norms), eps 1e-5.
func channelsLastLayerNorm(_ x: Tensor, g: Parameter, b: Parameter) -> Tensor {
    let c = g.shape[1]
    return x.layerNorm(weight: g.value.reshaped([c]), bias: b.value.reshaped([c]), eps: 1e-5)
}

/// A 1x1 Conv1d on channels-last tokens (B, n, C): a product over the channels, the weight kept in
/// PyTorch's shape (out, in, 1).
public final class PointwiseConv1d: Module {
    public let weight: Parameter
    public let bias: Parameter?
    init(_ inChannels: Int, _ outChannels: Int, bias: Bool = true, initializer: Initializer) {
        let (w, b) = initializer.linear(inFeatures: inChannels, outFeatures: outChannels)
        weight = Parameter(w.reshaped([outChannels, inChannels, 1]))
        self.bias = bias ? Parameter(b) : nil
    }
    func callAsFunction(_ x: Tensor) -> Tensor {
        Tensor.linear(x, weight: weight.value.reshaped([weight.shape[0], weight.shape[1]]), bias: bias?.value)
    }
}

/// The convolutional zoo's feed-forward on channels-last tokens: channel LayerNorm, 1x1 convolution
/// to mult x dim, GELU, 1x1 convolution back (NesT, SepViT, Twins, ScalableViT, CrossFormer).
/// `prefix` is where the Sequential sits ("net." in a FeedForward module, "" where the block holds
/// the Sequential itself); `outputDropout` false where the Sequential ends with the convolution.
public final class ConvFeedForward: Module {
    public let norm: ChannelsLastNorm
    public let hidden: PointwiseConv
    public let output: PointwiseConv
    let dropout: Dropout?
    let prefix: String
    let outputDropout: Bool
    init(dim: Int, mult: Int, dropout p: Float, prefix: String = "net.", outputDropout: Bool = true, initializer: Initializer) {
        norm = ChannelsLastNorm(dim)
        hidden = PointwiseConv(dim, dim * mult, initializer: initializer)
        output = PointwiseConv(dim * mult, dim, initializer: initializer)
        dropout = p > 0 ? Dropout(p, rng: initializer.dropoutStream) : nil
        (self.prefix, self.outputDropout) = (prefix, outputDropout)
    }
    public override var stateNames: [String: String] { ["norm": prefix + "0", "hidden": prefix + "1", "output": prefix + "4"] }
    func callAsFunction(_ x: Tensor) -> Tensor {
        var h = hidden.gelu(norm(x))
        if let dropout { h = dropout(h) }
        let y = output(h)
        return outputDropout ? (dropout.map { $0(y) } ?? y) : y
    }
}

/// A k x k convolution with stride k (no padding) of a channels-last map (B, H, W, C), as a product
/// over non-overlapping patches: (B, H/k * W/k, out). `weight` is PyTorch's (out, C, k, k); the
/// patches are read in its (c, kh, kw) order. Rows and columns past the last whole patch are
/// dropped, as the convolution drops them.
public func stridedPatchConv(_ x: Tensor, weight: Tensor, bias: Tensor? = nil, k: Int) -> Tensor {
    let (b, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (gh, gw) = (h / k, w / k)
    let whole = gh * k == h && gw * k == w ? x : x.slice(axis: 1, start: 0, length: gh * k).slice(axis: 2, start: 0, length: gw * k)
    let patches = k == 1 ? whole.reshaped([b, h * w, c])
        : whole.reshaped([b, gh, k, gw, k, c]).permuted([0, 1, 3, 5, 2, 4]).reshaped([b, gh * gw, c * k * k])
    return Tensor.linear(patches, weight: weight.reshaped([weight.shape[0], c * k * k]), bias: bias)
}

/// A 1x1 convolution (PyTorch weight (O, C, 1, 1)) of a channels-last map (B, ..., C): a product.
public func pointwise(_ x: Tensor, _ conv: Conv2d) -> Tensor {
    Tensor.linear(x, weight: pointwiseWeight(conv), bias: conv.bias?.value)
}

/// gelu(pointwise(x, conv)) as one op (`Tensor.linearGELU`, bit-identical to the two).
public func pointwiseGELU(_ x: Tensor, _ conv: Conv2d) -> Tensor {
    guard let bias = conv.bias else { return pointwise(x, conv).gelu() }
    return Tensor.linearGELU(x, weight: pointwiseWeight(conv), bias: bias.value)
}

/// A 1x1 convolution's weight (O, C, 1, 1) as the (O, C) matrix of its product.
func pointwiseWeight(_ conv: Conv2d) -> Tensor {
    let w = conv.weight.value
    precondition(w.shape[2] == 1 && w.shape[3] == 1 && conv.stride == 1 && conv.padding == 0 && conv.groups == 1, "pointwise: \(w.shape) is not a 1x1 convolution")
    return w.reshaped([w.shape[0], w.shape[1]])
}

/// A depthwise convolution layer (groups = channels) applied to a channels-last map (B, H, W, C).
public func depthwise(_ x: Tensor, _ conv: Conv2d) -> Tensor {
    precondition(conv.groups == x.shape[3] && conv.weight.shape[0] == x.shape[3], "depthwise: \(conv.weight.shape) is not depthwise over \(x.shape[3]) channels")
    return x.depthwiseConv2dChannelsLast(weight: conv.weight.value, bias: conv.bias?.value, stride: conv.stride, padding: conv.padding)
}

/// BatchNorm over the channels of a channels-last map (B, ..., C) (its rows are the positions).
public func channelsLastBatchNorm(_ x: Tensor, _ norm: BatchNorm) -> Tensor {
    norm(x.reshaped([x.count / x.shape[x.rank - 1], x.shape[x.rank - 1]])).reshaped(x.shape)
}

/// A convolution of a channels-last map (B, H, W, C) to (B, H', W', O). Without groups: every
/// output position's k x k x C window taken as a row of contiguous channel vectors
/// (`windowsChannelsLast`, zeros for taps outside the map), then one product with the weight as
/// (O, k k C); backward adds the rows' gradients back into the map. Grouped convolutions go
/// through the engine's (B, C, H, W) kernel.
public func channelsLastConv(_ x: Tensor, _ conv: Conv2d) -> Tensor {
    guard conv.groups == 1 else { return conv(x.permuted([0, 3, 1, 2])).permuted([0, 2, 3, 1]) }
    let (b, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (o, k, s, p) = (conv.weight.shape[0], conv.weight.shape[2], conv.stride, conv.padding)
    let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1)
    let columns = x.windowsChannelsLast(kernel: k, stride: s, padding: p)
    let weight = conv.weight.value.permuted([0, 2, 3, 1]).reshaped([o, k * k * c])
    return Tensor.linear(columns, weight: weight, bias: conv.bias?.value).reshaped([b, oh, ow, o])
}
