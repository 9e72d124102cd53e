import Foundation
import MigrationStream

/// The source's inventory sent in the PREFLIGHT command (JSON).
struct PreflightInventory: Codable, Sendable {
    struct Handler: Codable, Sendable {
        var idstr: String
        var instanceID: UInt32
        var versionID: UInt32
        var live: Bool
        var identity: String?
    }

    var format = 1
    var machineType: String
    var handlers: [Handler]

    func encoded() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array(try encoder.encode(self))
    }

    static func decode(_ bytes: [UInt8]) throws -> PreflightInventory {
        try JSONDecoder().decode(PreflightInventory.self, from: Data(bytes))
    }
}

/// The destination's differences with the source's inventory; empty = compatible.
func preflightDifferences(
    _ inventory: PreflightInventory, localMachine: String,
    local: [RegisteredHandler]
) -> [String] {
    var lines: [String] = []
    if inventory.machineType != localMachine {
        lines.append("machine type: source \"\(inventory.machineType)\", destination \"\(localMachine)\"")
    }
    for h in inventory.handlers {
        let key = HandlerIdentity.Key(h.idstr, instanceID: h.instanceID)
        guard let entry = local.first(where: { $0.identity.key == key }) else {
            lines.append("missing handler: \(key) (version \(h.versionID)) is not registered on the destination")
            continue
        }
        if h.versionID > entry.identity.versionID {
            lines.append(
                "version: \(key): the source writes version \(h.versionID), the destination reads up to \(entry.identity.versionID)")
        }
        if let theirs = h.identity, let ours = entry.handler.preflightIdentity, theirs != ours {
            lines.append("device: \(key): source \"\(theirs)\", destination \"\(ours)\"")
        }
    }
    return lines
}

/// QEMU's VMDESCRIPTION JSON for the FULL sections we wrote (legacy, opaque-buffer entries).
func vmDescriptionJSON(pageSize: Int, devices: [(identity: HandlerIdentity, size: Int)]) -> [UInt8] {
    var text = "{\"page_size\": \(pageSize), \"devices\": ["
    text += devices.map { d in
        "{\"name\": \(jsonString(d.identity.idstr)), \"instance_id\": \(d.identity.instanceID), \"size\": \(d.size), "
            + "\"fields\": [{\"name\": \"data\", \"type\": \"buffer\", \"size\": \(d.size)}]}"
    }.joined(separator: ", ")
    text += "]}"
    return Array(text.utf8)
}
