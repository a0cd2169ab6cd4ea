-- The backlog entry format, <a|d><version>:<profileIntegrationId> (the id may hold colons);
-- schemas/keys.py encode_entry/decode_entry is the same format in Python.

-- The entry for an action code followed by a profile id (what the edge sends), at a version.
local function versioned_entry(code_and_id, version)
  return string.sub(code_and_id, 1, 1) .. string.format('%.0f', version) .. ':'
    .. string.sub(code_and_id, 2)
end

-- An entry's version, as a number.
local function entry_version(entry)
  return tonumber(string.sub(entry, 2, string.find(entry, ':', 2, true) - 1))
end

-- An entry's action code ('a' or 'd'), its version as a string, and its profile id.
local function split_entry(entry)
  local colon = string.find(entry, ':', 2, true)
  return string.sub(entry, 1, 1), string.sub(entry, 2, colon - 1), string.sub(entry, colon + 1)
end
